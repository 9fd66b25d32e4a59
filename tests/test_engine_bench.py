"""The attention engine's cocotb bench (``sim/test_engine.py``) on whole heads of real plans, bit for bit
against ``sw.golden``: mixed 0/4/8-bit, dense 8-bit, one kept block per row, and a ``small`` head."""

import json

import numpy as np
import pytest

from paro.errors import ParoError
from paro.flows.cli import main
from paro.flows.simulate import run_programs
from paro.sw.plan import load_plan
from paro.sw.program import engine_program, plan_workload


def _tiny_plan(tmp_path):
    path = tmp_path / "tiny.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "-o", str(path)]) == 0
    return load_plan(path)


#: The tiny-config Verilator benches share one build folder (the same tag as ``paro simulate``): one worker
#: runs them in turn, so the engine's C++ is compiled once.
TINY_VERILATOR = pytest.mark.xdist_group("engine-tiny-verilator")


@TINY_VERILATOR
def test_engine_tiny_heads(simulator, tmp_path):
    """Whole tiny heads from a real plan: mixed, all-8-bit dense, one kept block per row, every bitwidth."""
    plan = _tiny_plan(tmp_path)
    workload = plan_workload(plan)
    nb = plan.bitmap.shape[1]
    mixed = engine_program(plan, 1, workload=workload)
    assert {0, 4, 8} <= set(np.unique(mixed.bitmap).tolist()), "the mixed plan must use every bitwidth"
    one_block = np.zeros((nb, nb), dtype=np.uint8)
    one_block[np.arange(nb), (np.arange(nb) + 1) % nb] = np.where(np.arange(nb) % 2, 4, 8)
    programs = [mixed,
                engine_program(plan, 0, bitmap=np.full((nb, nb), 8, dtype=np.uint8), workload=workload),
                engine_program(plan, 2, bitmap=one_block, workload=workload),
                engine_program(plan, 3, workload=workload)]
    counters = run_programs(plan.config, programs, simulator)
    assert counters[1]["KEPT8"] == nb * nb and counters[1]["SKIPPED"] == 0
    assert counters[2]["KEPT8"] + counters[2]["KEPT4"] == nb


def test_engine_small_head_verilator(verilator, tmp_path):
    """A head of the small workload calibrated at density 0.25 (Verilator only: ~1.7M cycles)."""
    path = tmp_path / "small.npz"
    assert main(["calibrate", "--workload", "small", "--heads", "2", "--density", "0.25", "--avg-bits", "1.5",
                 "-o", str(path)]) == 0
    plan = load_plan(path)
    prog = engine_program(plan, 1)           # a temporal head, reordered HWF
    (counters,) = run_programs(plan.config, [prog], verilator, gap=0.1, tag="small")
    assert counters["KEPT4"] > 0 and counters["KEPT8"] > 0


@TINY_VERILATOR
def test_engine_mismatch_is_reported(verilator, tmp_path):
    """A single wrong expected code makes the run fail: bit-exactness is checked, not assumed."""
    plan = _tiny_plan(tmp_path)
    prog = engine_program(plan, 0)
    prog.codes = prog.codes.copy()
    prog.codes[5, 3] += 1
    with pytest.raises(ParoError) as error:
        run_programs(plan.config, [prog], verilator)
    groups = plan.config.head_dim // plan.config.rows
    message = str(error.value)
    assert message.startswith(f"the engine on verilator did not match the golden model: program 0, "
                              f"output beat {5 * groups} (query 5, head dims 0..): got [")
    got, golden = (json.loads(part.split("]")[0] + "]") for part in message.split(": got ")[1].split(", golden "))
    assert golden[3] == got[3] + 1 and golden[:3] == got[:3]
