"""cocotb bench of SimPicker's LUT-based FP x INT multiplier (``hw/lut_multiplier.py``) against
``sw.golden.lut_multiplier``: operands from real numerators (``sw.golden.lut_fp``) and the extremes, INT8
lanes biased toward -128, 127, 0 and -1, runs of 1 to 6 beats, random gaps on ``p`` and ``v`` and
back-pressure on ``o``; every product and ``last`` compared, in order."""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from paro.hw.lut_multiplier import fp_layout, lane_layout, product_layout
from paro.sim.streams import StreamSink, StreamSource, bench_config, bench_rng, reset, start_clock
from paro.sw.golden import lut_fp, lut_multiplier

EDGES = (-128, 127, 0, -1, -8, 8)


def make_runs(rng, config, count, max_beats):
    one = 1 << config.exp_bits
    numerators = [0, 1, one, one - 1] + [rng.randint(0, one) for _ in range(count - 4)]
    mants, exps = lut_fp(numerators, config)
    runs = []
    for mant, exp in zip(mants.tolist(), exps.tolist()):
        beats = [[rng.choice(EDGES) if rng.random() < 0.3 else rng.randint(-128, 127)
                  for _ in range(config.lut_lanes)] for _ in range(rng.randint(1, max_beats))]
        runs.append(((mant, exp), beats))
    return runs


async def run_and_check(dut, name, gap, stall, count=200, max_beats=6):
    config = bench_config()
    rng = bench_rng(name)
    runs = make_runs(rng, config, count, max_beats)
    fp, lanes, products = fp_layout(config), lane_layout(config), product_layout(config)
    p_beats = [fp.const({"mant": mant, "exp": exp}).as_bits() for (mant, exp), _ in runs]
    v_beats, expected = [], []
    for (mant, exp), beats in runs:
        for n, values in enumerate(beats):
            last = n == len(beats) - 1
            v_beats.append(lanes.const({"v": [{"low": x & 15, "high": x >> 4} for x in values],
                                        "last": last}).as_bits())
            expected.append((lut_multiplier(mant, exp, np.array(values)).tolist(), last))

    await start_clock(dut)
    await reset(dut)
    p_source = StreamSource(dut, "p", rng, gap=gap)
    v_source = StreamSource(dut, "v", rng, gap=gap)
    sink = StreamSink(dut, "o", rng, stall=stall)
    cocotb.start_soon(sink.run())
    cocotb.start_soon(p_source.send(p_beats))
    await v_source.send(v_beats)
    for _ in range(20):
        if len(sink.beats) == len(expected):
            break
        await RisingEdge(dut.clk)
    assert len(sink.beats) == len(expected), f"{len(sink.beats)} of {len(expected)} beats"
    for n, (bits, (want, last)) in enumerate(zip(sink.beats, expected)):
        beat = products.from_bits(bits)
        got = [beat.products[k] for k in range(config.lut_lanes)]
        assert (got, bool(beat.last)) == (want, last), f"beat {n}: got {got} last {beat.last}, golden {want} {last}"
    dut._log.info(f"{len(expected)} beats of {config.lut_lanes} products from {len(runs)} operands, bit-exact")


@cocotb.test()
async def lut_multiplier_full_rate(dut):
    """No gaps, no back-pressure: every run's products, the double buffer never starving."""
    await run_and_check(dut, "lut_multiplier_full_rate", gap=0.0, stall=0.0)


@cocotb.test()
async def lut_multiplier_gaps_and_back_pressure(dut):
    """Random gaps on both inputs and back-pressure on the output: nothing lost or duplicated."""
    await run_and_check(dut, "lut_multiplier_gaps_and_back_pressure", gap=0.3, stall=0.3)
