"""cocotb bench of SimPicker's reuse check (``hw/reuse_check.py``, 8 lanes) against ``sw.golden.reuse_check``:
pairs of near-copies and unrelated queries with random mantissas and thresholds, the extremes, random gaps
on ``i`` and back-pressure on ``o``; every decision compared, in order."""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from paro.hw.reuse_check import MULT_BITS, pair_layout
from paro.sim.streams import StreamSink, StreamSource, bench_config, bench_rng, reset, start_clock
from paro.sw.golden import REUSE_FRAC_BITS, reuse_check

LANES = 8


async def run_pairs(dut, name, gap, stall, count=60):
    config = bench_config()
    rng = bench_rng(name)
    layout, d, top = pair_layout(LANES), config.head_dim, (1 << MULT_BITS) - 1
    await start_clock(dut)
    await reset(dut)
    sink = StreamSink(dut, "o", rng, stall=stall)
    cocotb.start_soon(sink.run())
    decisions = []
    for n in range(count):
        a = [rng.randint(-127, 127) for _ in range(d)]
        if n == 0:
            t, a = [127] * d, [-127] * d
        elif rng.random() < 0.7:
            step = rng.randint(0, 2)
            t = [max(-127, min(127, x + step * rng.randint(-12, 12))) for x in a]
        else:
            t = [rng.randint(-127, 127) for _ in range(d)]
        mult_t = top if n == 0 else rng.randint(1, top)
        mult_a = mult_t if rng.random() < 0.5 else rng.randint(1, top)
        tau = rng.randint(0, 1 << REUSE_FRAC_BITS)
        want = bool(reuse_check(np.array(t) * mult_t, np.array(a) * mult_a, tau))
        dut.tau.value = tau
        beats = [layout.const({"t": t[b:b + LANES], "a": a[b:b + LANES], "mult_t": mult_t, "mult_a": mult_a,
                               "last": b + LANES == d}).as_bits() for b in range(0, d, LANES)]
        await StreamSource(dut, "i", rng, gap=gap).send(beats)
        while len(sink.beats) < n + 1:
            await RisingEdge(dut.clk)
        got = bool(sink.beats[n] & 1)
        assert got == want, f"pair {n}: got reuse {got}, golden {want}"
        decisions.append(want)
    assert 0 < sum(decisions) < count
    dut._log.info(f"{count} pairs checked bit-exact, {sum(decisions)} reused")


@cocotb.test()
async def reuse_check_pairs(dut):
    """Pairs back to back, no gaps or stalls."""
    await run_pairs(dut, "reuse_check_pairs", gap=0.0, stall=0.0)


@cocotb.test()
async def reuse_check_gaps_and_back_pressure(dut):
    """Random gaps on the input and back-pressure on the decisions."""
    await run_pairs(dut, "reuse_check_gaps_and_back_pressure", gap=0.3, stall=0.4)
