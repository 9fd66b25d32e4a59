"""cocotb benches of the PE (``sim/test_pe.py``) and the systolic array (``sim/test_array.py``) on both
simulators: random operands, stalls and back-pressure, every result compared with ``sw.golden``."""

import pytest

from paro.config import AcceleratorConfig
from paro.sim.runner import run_bench

ARRAY_SIZES = [(2, 2), (4, 4), (8, 8), (2, 4)]
#: Arrays built with 2-bit blocks too (four accumulators per PE, the crumb datapath): every mode, mixed.
TWO_BIT_SIZES = [(4, 4), (2, 4)]
ALL_BITS = (0, 2, 4, 8)


@pytest.mark.parametrize("bitwidths", [(0, 8), (0, 4, 8), ALL_BITS], ids=["08", "048", "0248"])
def test_pe_cocotb(simulator, bitwidths):
    run_bench(AcceleratorConfig(bitwidths=bitwidths), "pe", "paro.sim.test_pe", simulator, seed=20261125)


@pytest.mark.parametrize("rows,cols", ARRAY_SIZES, ids=[f"{r}x{c}" for r, c in ARRAY_SIZES])
def test_array_cocotb(simulator, rows, cols):
    run_bench(AcceleratorConfig(rows=rows, cols=cols), "array", "paro.sim.test_array", simulator, seed=20261125)


@pytest.mark.parametrize("rows,cols", TWO_BIT_SIZES, ids=[f"{r}x{c}" for r, c in TWO_BIT_SIZES])
def test_array_cocotb_two_bit(simulator, rows, cols):
    config = AcceleratorConfig(rows=rows, cols=cols, bitwidths=ALL_BITS)
    run_bench(config, "array", "paro.sim.test_array", simulator, seed=20261125)


def test_array_cocotb_int8_only(simulator):
    """The plainest array: INT8-only PEs (one 8 x 8 multiplier, one accumulator each), C beats a tile."""
    run_bench(AcceleratorConfig(rows=2, cols=4, bitwidths=(0, 8)), "array", "paro.sim.test_array", simulator,
              seed=20261125)


#: Pipelined PEs (``pe_stages`` registers between multipliers and accumulators): (bitwidths, stages).
PIPELINED = [((0, 4, 8), 1), ((0, 2, 4, 8), 2), ((0, 8), 1)]


@pytest.mark.parametrize("bitwidths,stages", PIPELINED, ids=["048-1", "0248-2", "08-1"])
def test_pe_cocotb_pipelined(simulator, bitwidths, stages):
    run_bench(AcceleratorConfig(bitwidths=bitwidths, pe_stages=stages), "pe", "paro.sim.test_pe", simulator,
              seed=20261125)


@pytest.mark.parametrize("bitwidths,stages", PIPELINED[:2], ids=["4x4-048-1", "2x4-0248-2"])
def test_array_cocotb_pipelined(simulator, bitwidths, stages):
    rows = 4 if stages == 1 else 2
    run_bench(AcceleratorConfig(rows=rows, cols=4, bitwidths=bitwidths, pe_stages=stages), "array",
              "paro.sim.test_array", simulator, seed=20261125)
