"""The hardware rounded shift (hw/rounding.py) against golden.round_shift, at every shift a signal can carry:
past the value's width too, where the narrow form clamps."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from paro.hw.rounding import round_shift
from paro.sw import golden

SEED = 20261129


@pytest.mark.parametrize("shape,shift_bits", [(signed(12), 4), (signed(9), 5), (unsigned(10), 4), (signed(40), 6)],
                         ids=["s12-by-4", "s9-by-5", "u10-by-4", "s40-by-6"])
def test_round_shift_matches_golden(shape, shift_bits):
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    value, shift = Signal(shape), Signal(shift_bits)
    out, constant = Signal(shape), Signal(shape)
    m = Module()
    m.d.comb += [out.eq(round_shift(value, shift)), constant.eq(round_shift(value, 3))]
    low, high = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed else (0, 1 << shape.width)
    values = np.concatenate([[low, high - 1, 0, -1 if shape.signed else 1], rng.integers(low, high, 60)])
    assert len(round_shift(Signal(signed(61)), Signal(6))) <= 64          # the score unit's: one machine word

    async def testbench(ctx):
        for v in values:
            for s in range(1 << shift_bits):
                ctx.set(value, int(v))
                ctx.set(shift, s)
                want = int(golden.round_shift(int(v), s)) if s < 63 else 0
                assert ctx.get(out) == want, (int(v), s)
            assert ctx.get(constant) == int(golden.round_shift(int(v), 3))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()


def test_round_shift_refuses_a_negative_constant():
    with pytest.raises(ValueError, match="shift >= 0"):
        round_shift(Signal(8), -1)
