"""cocotb bench of the engine's LUT path (``hw/lut_path.py``) against ``sw.golden.lut_path``: blocks of
numerators of every kind (a certain key, small rows, empty rows, padding keys) and V rows biased toward the
extremes, beats of query groups key by key with random gaps; every accumulator beat (query, dimension group,
the block's ``cv``, ``kept_index`` and the lane's ``z``) compared, each exactly once."""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge

from paro.hw.lut_path import lut_beat_layout
from paro.hw.tile_queue import tile_layout
from paro.sim.streams import StreamSource, bench_config, bench_rng, reset, start_clock
from paro.sw.golden import lut_path, p_shift

CV, KEPT_INDEX = 23456, 1


def make_block(rng, config):
    """Numerators (B x B) and V rows (B x d) of one block, as tests/test_lut_path.py draws them."""
    B, d, one = config.block_size, config.head_dim, 1 << config.exp_bits
    e = np.array([[rng.randint(0, one) for _ in range(B)] for _ in range(B)])
    e[0] = 0
    e[0, 3] = one
    e[1] = [rng.randint(0, 7) for _ in range(B)]
    e[2] = 0
    e[:, -3:] = 0
    v8 = np.array([[rng.choice((-128, 127, 0, -1)) if rng.random() < 0.3 else rng.randint(-128, 127)
                    for _ in range(d)] for _ in range(B)])
    return e, v8


async def collect(dut, config, got, stop):
    """Every cycle with ``acc_valid``: the beat's (query, dimension group) -> (column, tile fields)."""
    tiles, C, R, width = tile_layout(config), config.cols, config.rows, config.acc_width
    while not stop[0]:
        await FallingEdge(dut.clk)
        if dut.acc_valid.value == 1:
            tile, beat, column = tiles.from_bits(int(dut.tile.value)), int(dut.beat.value), int(dut.column.value)
            values = [((column >> (r * width)) & ((1 << width) - 1)) for r in range(R)]
            values = [v - (1 << width) if v >> (width - 1) else v for v in values]
            key = (tile.query_group * C + beat, tile.dim_group)
            assert key not in got, f"a second beat for query {key[0]}, dimension group {key[1]}"
            got[key] = (values, (tile.pass_b, tile.packing, tile.kept_index, tile.cv, tile.z[beat]))
        await RisingEdge(dut.clk)


async def run_and_check(dut, name, gap, blocks=2):
    config = bench_config()
    rng = bench_rng(name)
    B, C, R, d = config.block_size, config.cols, config.rows, config.head_dim
    layout = lut_beat_layout(config)
    await start_clock(dut)
    await reset(dut)
    dut.cv.value, dut.kept_index.value = CV, KEPT_INDEX
    source = StreamSource(dut, "i", rng, gap=gap)
    for block in range(blocks):
        e, v8 = make_block(rng, config)
        z = p_shift(e, config)
        beats = [layout.const({"e": e[g * C:(g + 1) * C, k].tolist(), "z": z[g * C:(g + 1) * C].tolist(),
                               "v": v8[k].tolist(), "query_group": g, "first": k == 0,
                               "last": k == B - 1}).as_bits() for g in range(B // C) for k in range(B)]
        got, stop = {}, [False]
        monitor = cocotb.start_soon(collect(dut, config, got, stop))
        await source.send(beats)
        for _ in range(4 * C * d):
            await RisingEdge(dut.clk)
            if dut.busy.value == 0:
                break
        await RisingEdge(dut.clk)
        stop[0] = True
        await monitor
        u, z = lut_path(e, v8, config)
        want = {(q, g): (u[q, g * R:(g + 1) * R].tolist(), (1, 0, KEPT_INDEX, CV, int(z[q])))
                for q in range(B) for g in range(d // R)}
        assert got.keys() == want.keys(), f"block {block}: {len(got)} of {len(want)} accumulator beats"
        for key, value in want.items():
            assert got[key] == value, f"block {block}, query {key[0]}, dimension group {key[1]}: got {got[key]}, " \
                                      f"golden {value}"
    dut._log.info(f"{blocks} blocks of {B} x {B} keys, {B * d // R} accumulator beats each, bit-exact")


@cocotb.test()
async def lut_path_full_rate(dut):
    """Beats back to back: the multiplier takes a chunk every cycle."""
    await run_and_check(dut, "lut_path_full_rate", gap=0.0)


@cocotb.test()
async def lut_path_gaps(dut):
    """30% gaps on the input: the path waits, loses and repeats nothing."""
    await run_and_check(dut, "lut_path_gaps", gap=0.3)
