"""The engine's LUT path (``hw/lut_path.py``) against its golden twin (:func:`paro.sw.golden.lut_path`) in the
Amaranth simulator: a block's query groups key by key, with gaps on the input, every accumulator beat
checked, and the documented rate."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.hw.lut_path import LutPath
from paro.sw import golden

SEED = 20261130


def _config(lut_lanes, rows=4, cols=4):
    return AcceleratorConfig(rows=rows, cols=cols, block_size=16, head_dim=32, max_seq_len=256, spec_lanes=8,
                             lut_lanes=lut_lanes, lut_path=True)


def block(rng, config):
    """Numerators of one block (rows of every kind: one at 2**exp_bits, small ones, zeros, padding keys) and
    its V rows (the extremes often)."""
    B, d, one = config.block_size, config.head_dim, 1 << config.exp_bits
    e = rng.integers(0, one + 1, (B, B))
    e[0] = 0
    e[0, 3] = one                                    # a row with one certain key
    e[1] = rng.integers(0, 8, B)                     # a row of small numerators: a large segment shift
    e[2] = 0                                         # a row with no mass in this block
    e[3] = one
    e[:, -3:] = 0                                    # padding keys
    v8 = rng.integers(-128, 128, (B, d))
    v8[rng.random((B, d)) < 0.2] = -128
    v8[rng.random((B, d)) < 0.1] = 127
    return e, v8


def simulate(config, e, v8, rng, gap=0.0, cv=12345, kept_index=2, max_cycles=200000):
    """Feed the block's beats (query groups of ``cols`` queries, keys in order, random input gaps); return
    the accumulator beats as ``{(query, dim_group): (column, tile)}`` and the cycle of the last one."""
    B, C = config.block_size, config.cols
    z = golden.p_shift(e, config)
    beats = [{"e": e[g * C:(g + 1) * C, k].tolist(), "z": z[g * C:(g + 1) * C].tolist(), "v": v8[k].tolist(),
              "query_group": g, "first": k == 0, "last": k == B - 1} for g in range(B // C) for k in range(B)]
    dut = LutPath(config)
    got, end = {}, [0]

    async def testbench(ctx):
        ctx.set(dut.cv, cv)
        ctx.set(dut.kept_index, kept_index)
        sent = 0
        for cycle in range(max_cycles):
            offer = sent < len(beats) and rng.random() >= gap
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(dut.i.payload, beats[sent])
            take = offer and ctx.get(dut.i.ready)
            if ctx.get(dut.acc_valid):
                tile = ctx.get(dut.tile)
                query = tile.query_group * C + ctx.get(dut.beat)
                key = (query, tile.dim_group)
                assert key not in got, f"a second beat for query {query}, dimension group {tile.dim_group}"
                got[key] = ([ctx.get(dut.column)[r] for r in range(config.rows)],
                            (tile.pass_b, tile.packing, tile.kept_index, tile.cv, tile.z[ctx.get(dut.beat)]))
                end[0] = cycle
            await ctx.tick()
            sent += take
            if sent == len(beats) and not ctx.get(dut.busy):
                return
        raise AssertionError(f"{sent} of {len(beats)} beats taken, still busy after {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got, end[0]


def expected(config, e, v8, cv=12345, kept_index=2):
    u, z = golden.lut_path(e, v8, config)
    R = config.rows
    return {(q, g): (u[q, g * R:(g + 1) * R].tolist(), (1, 0, kept_index, cv, int(z[q])))
            for q in range(config.block_size) for g in range(config.head_dim // R)}


@pytest.mark.parametrize("lanes, gap", [(8, 0.0), (8, 0.3), (32, 0.0), (32, 0.4), (4, 0.2)])
def test_lut_path_is_bit_exact(lanes, gap):
    config = _config(lanes)
    rng = np.random.default_rng(SEED + lanes)
    print(f"seed {SEED + lanes}")
    e, v8 = block(rng, config)
    got, _ = simulate(config, e, v8, rng, gap=gap)
    want = expected(config, e, v8)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], f"query {key[0]}, dimension group {key[1]}"


@pytest.mark.parametrize("lanes, rows, cols", [(8, 4, 4), (32, 4, 4), (4, 4, 4), (16, 2, 2), (32, 8, 2)])
def test_lut_path_takes_a_chunk_every_cycle(lanes, rows, cols):
    """Without gaps a block's ``N = B x B x d / L`` chunks enter the multiplier on cycles ``2 .. N + 1`` (the
    first beat is taken on cycle 0, its operand's table built on cycle 1; no bubble between keys or groups);
    the last group's ``C x d / L`` scaled entries are written one a cycle from cycle ``N + 3 - C d / L`` and
    are read from the cycle after, ``L / R`` reads an entry, each beat out one cycle after its read: the last
    beat on cycle ``N + 4 - C d / L + C d / R``."""
    config = _config(lanes, rows, cols)
    rng = np.random.default_rng(SEED)
    e, v8 = block(rng, config)
    _, last = simulate(config, e, v8, rng)
    B, d, R, C = config.block_size, config.head_dim, config.rows, config.cols
    n = B * B * d // lanes
    assert last == n + 4 - C * d // lanes + C * d // R


def test_lut_path_refuses_lanes_below_the_rows():
    with pytest.raises(ParoError, match="lut_lanes"):
        LutPath(AcceleratorConfig(rows=8, cols=4, block_size=16, head_dim=32, max_seq_len=256, spec_lanes=8,
                                  lut_lanes=4, lut_path=True))
    with pytest.raises(ParoError, match="needs a build with lut_path"):
        LutPath(AcceleratorConfig(rows=4, cols=4, block_size=16, head_dim=32, max_seq_len=256, lut_lanes=8))
