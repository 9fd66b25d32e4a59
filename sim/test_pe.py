"""cocotb bench of one PE (``hw/pe.py``) against ``sw.golden.pe_step``, cycle by cycle.

Every cycle the bench drives random ``en`` (freezes), ``ctl.valid`` (bubbles), operands biased toward the
extremes (-128, 127, 0, -1, -8, 7, 15) and random tile ends, then checks ``result``, ``a_out``, ``b_out`` and
``ctl_out`` against the golden model's state for the same inputs.
"""

import cocotb
from amaranth import signed
from amaranth.lib import data
from cocotb.triggers import FallingEdge, RisingEdge

from paro.hw.pe import PEControl
from paro.config import PEMode
from paro.sim.streams import bench_config, bench_rng, reset, start_clock
from paro.sw.golden import operand_range, pack_operand_b, pe_step, wrap

EDGE_VALUES = {PEMode.INT8: (-128, 127, 0, -1), PEMode.INT4: (-8, 7, 0, -1), PEMode.UINT4: (0, 15, 1),
               PEMode.INT2: (-2, 1, 0, -1), PEMode.UINT2: (0, 3, 1)}


def _operand(rng, low, high, edges):
    return rng.choice(edges) if rng.random() < 0.25 else rng.randint(low, high)


class GoldenPE:
    """Register-level state of the PE, updated with :func:`sw.golden.pe_step` on each enabled edge; a beat
    reaches the accumulators ``pe_stages`` enabled edges after it entered (the PE's pipeline registers)."""

    def __init__(self, config):
        self.acc_width = config.acc_width
        self.acc, self.fresh = (0,) * config.pe_accumulators, True
        self.result = self.acc
        self.a_out, self.b_out, self.ctl_out = 0, 0, 0
        self.pipeline = [(0, 0, PEMode.INT8, False, False)] * config.pe_stages

    def edge(self, en, a, b_word, valid, last, mode, ctl_bits):
        if not en:
            return
        self.a_out, self.b_out, self.ctl_out = a, b_word, ctl_bits
        self.pipeline.append((a, b_word, mode, valid, last))
        a, b_word, mode, valid, last = self.pipeline.pop(0)
        if valid:
            self.acc = pe_step(self.acc, a, b_word, mode, self.fresh, self.acc_width)
            self.fresh = bool(last)
            if last:
                self.result = self.acc


def read_result(dut, config):
    lanes = config.pe_accumulators
    view = data.ArrayLayout(signed(config.acc_width), lanes).from_bits(dut.result.value.to_unsigned())
    return tuple(view[k] for k in range(lanes))


async def drive_pe(dut, golden, beats, rng, stall=0.1, bubble=0.1):
    """Drive ``beats`` = [(a, b_values, mode, last)] with random freezes/bubbles; check every cycle.

    ``golden`` (a :class:`GoldenPE`) carries the expected state across calls. Returns the number of valid
    beats applied.
    """
    config = bench_config()
    applied, checked = 0, 0
    pending = list(beats)
    while pending or checked < 2 + config.pe_stages:
        en = rng.random() >= stall
        valid = bool(pending) and rng.random() >= bubble
        if valid:
            a, b_values, mode, last = pending[0]
        else:
            a, b_values, mode, last = rng.randint(-128, 127), None, PEMode.INT8, rng.random() < 0.5
        b_word = int(pack_operand_b([b_values] if mode is PEMode.INT8 else b_values, mode)[0]) \
            if b_values is not None else rng.randint(0, 255)
        ctl_bits = PEControl.const({"valid": valid, "last": last, "mode": mode}).as_bits()
        dut.en.value = int(en)
        dut.a.value = a & 0xFF
        dut.b.value = b_word
        dut.ctl.value = ctl_bits

        await FallingEdge(dut.clk)
        result = read_result(dut, config)
        assert result == golden.result, f"result {result} != golden {golden.result} after {applied} beats"
        assert dut.a_out.value.to_signed() == golden.a_out
        assert dut.b_out.value.to_unsigned() == golden.b_out
        assert dut.ctl_out.value.to_unsigned() == golden.ctl_out

        await RisingEdge(dut.clk)
        golden.edge(en, a, b_word, valid, last, mode, ctl_bits)
        if en and valid:
            pending.pop(0)
            applied += 1
        if not pending and en:                  # enabled cycles: the pipeline flushes on them
            checked += 1
    return applied


def random_tiles(rng, modes, count, max_len):
    """``count`` beats in tiles of random length 1..max_len, each tile in a random mode of ``modes``."""
    beats = []
    while len(beats) < count:
        mode = rng.choice(modes)
        length = min(rng.randint(1, max_len), count - len(beats))
        low, high = operand_range(mode)
        for k in range(length):
            a = _operand(rng, -128, 127, EDGE_VALUES[PEMode.INT8])
            if mode is PEMode.INT8:
                b = _operand(rng, low, high, EDGE_VALUES[mode])
            else:
                b = [_operand(rng, low, high, EDGE_VALUES[mode]) for _ in range(mode.products_per_cycle)]
            beats.append((a, b, mode, k == length - 1))
    return beats


@cocotb.test()
async def pe_int8_random_pairs(dut):
    """10,000 random INT8 operand pairs in tiles of random length, with freezes and bubbles."""
    rng = bench_rng("pe_int8_random_pairs")
    golden = GoldenPE(bench_config())
    await start_clock(dut)
    await reset(dut)
    applied = await drive_pe(dut, golden, random_tiles(rng, [PEMode.INT8], 10_000, bench_config().depth), rng)
    assert applied == 10_000


@cocotb.test()
async def pe_accumulator_width_limit(dut):
    """-128 x -128 accumulated over the full depth reaches exactly depth * 2**14; past the width it wraps."""
    rng = bench_rng("pe_accumulator_width_limit")
    config = bench_config()
    golden = GoldenPE(bench_config())
    await start_clock(dut)
    await reset(dut)
    depth = config.depth
    full = [(-128, -128, PEMode.INT8, k == depth - 1) for k in range(depth)]
    # Then -128 x 127 (the most negative product) over the full depth, then a tile long enough to wrap.
    negative = [(-128, 127, PEMode.INT8, k == depth - 1) for k in range(depth)]
    wrap_len = ((1 << (config.acc_width - 1)) >> 14) + 3
    overflow = [(-128, -128, PEMode.INT8, k == wrap_len - 1) for k in range(wrap_len)]
    await drive_pe(dut, golden, full, rng, stall=0.0, bubble=0.0)
    assert read_result(dut, config)[0] == depth << 14
    await drive_pe(dut, golden, negative, rng, stall=0.0, bubble=0.0)
    assert read_result(dut, config)[0] == depth * -128 * 127
    await drive_pe(dut, golden, overflow, rng, stall=0.2, bubble=0.2)
    expected = int(wrap(wrap_len << 14, config.acc_width))
    assert expected < 0, "the overflow tile must actually wrap"
    assert read_result(dut, config)[0] == expected


@cocotb.test()
async def pe_clear_between_tiles(dut):
    """Back-to-back one-beat tiles: each result is that beat's product alone (the accumulator restarts)."""
    rng = bench_rng("pe_clear_between_tiles")
    golden = GoldenPE(bench_config())
    await start_clock(dut)
    await reset(dut)
    beats = [(rng.randint(-128, 127), rng.randint(-128, 127), PEMode.INT8, True) for _ in range(200)]
    await drive_pe(dut, golden, beats, rng, stall=0.0, bubble=0.0)
    await drive_pe(dut, golden, beats, rng)


@cocotb.test()
async def pe_mixed_modes(dut):
    """Tiles in random modes (every mode of the config) switching back to back, with freezes and bubbles."""
    config = bench_config()
    rng = bench_rng("pe_mixed_modes")
    golden = GoldenPE(bench_config())
    await start_clock(dut)
    await reset(dut)
    applied = await drive_pe(dut, golden, random_tiles(rng, list(config.modes), 4_000, 16), rng)
    assert applied == 4_000

