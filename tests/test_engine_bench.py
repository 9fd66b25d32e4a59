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
    """A tiny plan for an engine whose K/V cache holds 3 of the head's 6 key blocks: rows evict and refetch."""
    path = tmp_path / "tiny.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "--kv-cache-blocks", "3", "-o", str(path)]) == 0
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


def test_engine_small_head_fast_mode(verilator, tmp_path):
    """A head of the small workload calibrated at density 0.25 (~1.8M cycles) in the fast run mode (the C++
    Verilator harness), on a build whose score buffer holds 512 of the 1,088 tokens' keys per query row (rows
    keep at most 6 blocks) and whose K/V cache holds 8 of the 17 key blocks; then one wrong expected code makes
    the same run fail."""
    path = tmp_path / "small.npz"
    assert main(["calibrate", "--workload", "small", "--heads", "2", "--density", "0.25", "--avg-bits", "1.5",
                 "--max-kept-keys", "512", "--kv-cache-blocks", "8", "-o", str(path)]) == 0
    plan = load_plan(path)
    assert plan.config.max_kept_keys == 512 < plan.bitmap.shape[1] * plan.config.block_size
    assert plan.config.kv_cache_blocks == 8 < plan.bitmap.shape[1]
    prog = engine_program(plan, 1)           # a temporal head, reordered HWF
    stats = []
    (counters,) = run_programs(plan.config, [prog], verilator, gap=0, tag="small", fast=True, stats=stats)
    assert counters["KEPT4"] > 0 and counters["KEPT8"] > 0
    assert counters["CYCLES"] > 1_600_000 and abs(stats[0]["run_cycles"] - counters["CYCLES"]) <= 4
    assert stats[0]["cycles_per_second"] > 0
    prog.codes = prog.codes.copy()
    prog.codes[-1, -1] += 1
    with pytest.raises(ParoError) as error:
        run_programs(plan.config, [prog], verilator, gap=0, tag="small", fast=True)
    last = prog.codes.shape[0] - 1
    assert str(error.value).startswith("the engine on verilator (fast mode) did not match the golden model: "
                                       f"program 0, output query {last}, head dims 60..63: got [")


@TINY_VERILATOR
def test_engine_mismatch_is_reported(verilator, tmp_path):
    """A single wrong expected code makes the run fail: bit-exactness is checked, not assumed."""
    plan = _tiny_plan(tmp_path)
    prog = engine_program(plan, 0)
    prog.codes = prog.codes.copy()
    prog.codes[5, 3] += 1
    with pytest.raises(ParoError) as error:
        run_programs(plan.config, [prog], verilator)
    message = str(error.value)
    assert message.startswith("the engine on verilator did not match the golden model: program 0, "
                              f"output query 5, head dims 0..{plan.config.rows - 1}: got [")
    got, golden = (json.loads(part.split("]")[0] + "]") for part in message.split(": got ")[1].split(", golden "))
    assert golden[3] == got[3] + 1 and golden[:3] == got[:3]
