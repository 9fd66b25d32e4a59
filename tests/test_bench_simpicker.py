"""cocotb benches of SimPicker's blocks on both simulators: random gaps and back-pressure on every stream,
every output compared with ``sw.golden``."""

import pytest

from paro.config import AcceleratorConfig
from paro.sim.runner import run_bench

#: (lanes, mantissa bits): a BF16-like operand on 16 lanes, an FP16-like one on 4.
LUT_BUILDS = [(16, 7), (4, 10)]


@pytest.mark.parametrize("lanes,mant_bits", LUT_BUILDS, ids=[f"{l}x{m}" for l, m in LUT_BUILDS])
def test_lut_multiplier_cocotb(simulator, lanes, mant_bits):
    run_bench(AcceleratorConfig(lut_lanes=lanes, lut_mant_bits=mant_bits), "lut_multiplier",
              "paro.sim.test_lut_multiplier", simulator, seed=20261129)


def test_lut_path_cocotb(simulator):
    config = AcceleratorConfig(rows=4, cols=2, block_size=16, head_dim=32, max_seq_len=256, spec_lanes=8,
                               lut_path=True, lut_lanes=8)
    run_bench(config, "lut_path", "paro.sim.test_lut_path", simulator, seed=20261130)


def test_speculation_cocotb(simulator):
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=256)
    run_bench(config, "speculation", "paro.sim.test_speculation", simulator, seed=20261129)


def test_reuse_check_cocotb(simulator):
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=32, max_seq_len=256)
    run_bench(config, "reuse_check", "paro.sim.test_reuse_check", simulator, seed=20261129)


def test_pooling_cocotb(simulator):
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=256)
    run_bench(config, "pooling", "paro.sim.test_pooling", simulator, seed=20261129)


def test_row_packer_cocotb(simulator):
    config = AcceleratorConfig(rows=4, cols=2, block_size=16, head_dim=16, max_seq_len=256)
    run_bench(config, "row_packer", "paro.sim.test_row_packer", simulator, seed=20261129)


def test_speculator_cocotb(simulator):
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=32, max_seq_len=256)
    run_bench(config, "speculator", "paro.sim.test_speculator", simulator, seed=20261129)
