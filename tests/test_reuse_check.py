"""SimPicker's reuse check (``hw/reuse_check.py``) against its golden twin (:func:`paro.sw.golden.reuse_check`)
in the Amaranth simulator: random pairs around the threshold, the extremes, gaps on ``i``, stalls on ``o``."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.hw.reuse_check import MULT_BITS, ReuseCheck
from paro.sw import golden

SEED = 20261129
CONFIG = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=32, max_seq_len=256)


def random_pairs(rng, config, count):
    """``(t, a, mult_t, mult_a, tau)``: near-copies (the threshold matters), unrelated pairs, a zero anchor,
    the largest codes and mantissas."""
    d, top = config.head_dim, (1 << MULT_BITS) - 1
    pairs = [(np.full(d, 127), np.full(d, -127), top, top, 1 << golden.REUSE_FRAC_BITS),
             (np.zeros(d, dtype=int), np.zeros(d, dtype=int), 1, 1, 0),
             (np.full(d, 3), np.zeros(d, dtype=int), 5, 5, 256)]
    while len(pairs) < count:
        a = rng.integers(-127, 128, d)
        t = np.clip(a + rng.integers(-12, 13, d) * int(rng.integers(0, 3)), -127, 127) if rng.random() < 0.7 \
            else rng.integers(-127, 128, d)
        mult = int(rng.integers(1, top + 1))
        other = mult if rng.random() < 0.5 else int(rng.integers(1, top + 1))
        pairs.append((t, a, mult, other, int(rng.integers(0, (1 << golden.REUSE_FRAC_BITS) + 1))))
    return pairs


def expected(pairs):
    return [bool(golden.reuse_check(t * mt, a * ma, tau)) for t, a, mt, ma, tau in pairs]


def run_pairs(config, pairs, rng, lanes=8, gap=0.0, stall=0.0):
    dut = ReuseCheck(config, lanes)
    beats = config.head_dim // lanes
    got = []

    async def testbench(ctx):
        sent = 0
        flat = [(p, b) for p in range(len(pairs)) for b in range(beats)]
        for _ in range(100 * len(flat) + 100):
            offer = sent < len(flat) and rng.random() >= gap
            ctx.set(dut.i.valid, offer)
            if offer:
                p, b = flat[sent]
                t, a, mult_t, mult_a, tau = pairs[p]
                ctx.set(dut.tau, tau)
                ctx.set(dut.i.payload, {"t": t[b * lanes:(b + 1) * lanes].tolist(),
                                        "a": a[b * lanes:(b + 1) * lanes].tolist(),
                                        "mult_t": mult_t, "mult_a": mult_a, "last": b == beats - 1})
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            taken = offer and ctx.get(dut.i.ready)
            if ready and ctx.get(dut.o.valid):
                got.append(bool(ctx.get(dut.o.payload).reuse))
            await ctx.tick()
            sent += taken
            if len(got) == len(pairs):
                return

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got


def test_reuse_check_matches_the_golden_test():
    rng = np.random.default_rng(SEED)
    pairs = random_pairs(rng, CONFIG, 60)
    want = expected(pairs)
    assert 10 < sum(want) < 50, "the pairs should straddle the threshold"
    assert run_pairs(CONFIG, pairs, rng) == want


@pytest.mark.parametrize("lanes", [1, 32])
def test_reuse_check_gaps_back_pressure_and_widths(lanes):
    rng = np.random.default_rng(SEED + lanes)
    pairs = random_pairs(rng, CONFIG, 30)
    assert run_pairs(CONFIG, pairs, rng, lanes=lanes, gap=0.3, stall=0.4) == expected(pairs)


def test_reuse_check_refuses_lanes_that_do_not_divide_head_dim():
    with pytest.raises(ParoError, match="lanes must be a power of two dividing head_dim 32"):
        ReuseCheck(CONFIG, 3)
