"""Amaranth-simulator tests of the engine's combinational units against their golden twins."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.hw.quantizer import PQuantizer
from paro.hw.softmax import Exp2Unit, LeadingZeroShift
from paro.config import PACKING, AcceleratorConfig
from paro.sw import golden

CONFIG = AcceleratorConfig(head_dim=32, block_size=16)
SEED = 20261125


def run_comb(dut, testbench):
    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()


def test_exp2_unit_matches_golden_including_huge_arguments():
    print(f"seed {SEED}")
    dut = Exp2Unit(CONFIG, 49)
    rng = np.random.default_rng(SEED)
    frac = CONFIG.score_frac_bits
    t = np.concatenate([np.arange(0, 20 << frac, 7), rng.integers(0, 1 << 48, size=300),
                        [(16 << frac) - 1, 16 << frac, 1 << 40, (1 << 49) - 1]])
    expected = golden.exp2_numerators(np.minimum(t, (1 << 62)), CONFIG)

    async def testbench(ctx):
        for value, want in zip(t, expected):
            ctx.set(dut.t, int(value))
            assert ctx.get(dut.e) == want, f"t={value}"
    run_comb(dut, testbench)


def test_leading_zero_shift_matches_golden():
    dut = LeadingZeroShift(CONFIG)
    peaks = np.arange(0, (1 << CONFIG.exp_bits) + 1)

    async def testbench(ctx):
        edges = [v for k in range(CONFIG.exp_bits + 1) for v in ((1 << k) - 1, 1 << k)]   # each bit length's ends
        for peak in peaks[::3].tolist() + edges:
            ctx.set(dut.peak, peak)
            assert ctx.get(dut.z) == golden.p_shift(np.array([[peak]]), CONFIG)[0], f"peak={peak}"
    run_comb(dut, testbench)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_p_quantizer_matches_golden(bits):
    dut = PQuantizer(CONFIG)
    rng = np.random.default_rng(bits)
    e = rng.integers(0, (1 << CONFIG.exp_bits) + 1, size=400) >> rng.integers(0, 15, size=400)
    z = golden.p_shift(e[:, None], CONFIG)
    expected, _ = golden.p_quantize(e[:, None], bits, CONFIG)

    async def testbench(ctx):
        ctx.set(dut.packing, PACKING[bits])
        for value, shift, want in zip(e, z, expected[:, 0]):
            ctx.set(dut.e, int(value))
            ctx.set(dut.z, int(shift))
            assert ctx.get(dut.p) == want, f"e={value} z={shift}"
    run_comb(dut, testbench)
