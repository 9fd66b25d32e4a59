"""``paro simulate``: run a BlockPlan head on the attention engine RTL and check it against the golden model.

One invocation builds the engine for the plan's configuration, runs the plan's head (its bitmap) and the
same head as a dense INT8 baseline (every block 8-bit, none skipped, same array) through the same build,
compares every output code with :mod:`paro.sw.golden` and reports cycles, ideal cycles and counters.

Failures are reported as what they are: a plan or program the engine cannot take (one line naming the
register or field, before anything is built), a simulator build failure, a run that did not finish, or an
output that differs from the golden model (the first differing beat).
"""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import PEMode
from ..errors import ParoError
from ..files import atomic_write
from ..sim.runner import SIMULATORS, BenchFailure, run_bench, simulator_problem
from ..sw.contract import check_engine_config, check_program, save_program
from ..sw.plan import load_plan
from ..sw.program import engine_program, plan_workload
from .bench import provenance, progress

__all__ = ["simulate", "ideal_cycles", "run_programs"]


def ideal_cycles(config, bitmap):
    """Kept-block MACs over the array's peak in each block's mode: QK^T and PV, B*B*d MACs each."""
    per_block = 2 * config.block_size * config.block_size * config.head_dim
    peak = {b: config.rows * config.cols * PEMode.for_block(b, "qk").products_per_cycle for b in (4, 8)}
    return int(sum(per_block // peak[int(b)] for b in np.asarray(bitmap).ravel() if b))


def cycle_limit(config, prog):
    """A generous bound on a program's cycles (4x ideal plus per-token overheads): a hang, not a slow run."""
    return 4 * ideal_cycles(config, prog.bitmap) + 200 * prog.q8.shape[0] + 10_000


def run_programs(config, programs, simulator, seed=20261125, gap=0.2, tag="engine", build_dir=None):
    """Run engine programs (:class:`paro.sw.contract.EngineProgram`) in one build; return their counters.

    Every program is checked against the contract first. Raises :class:`ParoError` saying what failed: the
    build (from the runner), a program that did not finish, or the first output that differs from the
    golden model.
    """
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"program{n}.npz" for n in range(len(programs))]
        outcomes = [Path(tmp) / f"outcome{n}.json" for n in range(len(programs))]
        for n, (path, prog) in enumerate(zip(paths, programs)):
            try:
                save_program(config, prog, path)          # checks the program against the contract first
            except ParoError as error:
                raise ParoError(f"program {n} cannot run on this engine: {error}") from None
        env = {"PARO_PROGRAMS": os.pathsep.join(map(str, paths)),
               "PARO_OUTCOMES": os.pathsep.join(map(str, outcomes)),
               "PARO_CYCLE_LIMITS": os.pathsep.join(str(cycle_limit(config, p)) for p in programs), "PARO_GAP": str(gap)}
        try:
            run_bench(config, "engine", "paro.sim.test_engine", simulator, seed=seed, tag=tag, extra_env=env,
                      build_dir=build_dir)
        except BenchFailure as error:
            failed = [json.loads(o.read_text()) for o in outcomes if o.exists()]
            failed = [o for o in failed if o["status"] != "ok"]
            if not failed:
                raise ParoError(f"the engine bench on {simulator} failed before comparing any output: {error}") from None
            what = "did not match the golden model" if failed[0]["status"] == "mismatch" else "did not finish"
            raise ParoError(f"the engine on {simulator} {what}: program {failed[0]['program']}, "
                            f"{failed[0]['detail']}") from None
        return [json.loads(o.read_text())["counters"] for o in outcomes]


def simulate(plan_path, simulator="verilator", head=0, report=None, gap=0.0, build_dir=None):
    """Simulate one head of a plan plus its dense INT8 baseline; write ``report`` (JSON); return the dict."""
    if simulator not in SIMULATORS:
        raise ParoError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    problem = simulator_problem(simulator)
    if problem:
        raise ParoError(problem)
    plan = load_plan(plan_path)
    config = plan.config
    check_engine_config(config)
    workload = plan_workload(plan)
    progress(f"golden model: head {head} and its dense INT8 baseline")
    prog = engine_program(plan, head, workload=workload)
    dense = engine_program(plan, head, bitmap=np.full_like(plan.bitmap[head], 8), workload=workload)
    for name, p in (("plan", prog), ("dense INT8 baseline", dense)):
        try:
            check_program(config, p)
        except ParoError as error:
            raise ParoError(f"head {head} ({name}) cannot run on the engine built for this plan: {error}") from None
    progress(f"{simulator}: build the engine and run both programs "
             f"(~{(ideal_cycles(config, prog.bitmap) + ideal_cycles(config, dense.bitmap)) / 1e6:.1f}M ideal cycles)")
    start = time.monotonic()
    counters, dense_counters = run_programs(config, [prog, dense], simulator, gap=gap, build_dir=build_dir)
    ideal = ideal_cycles(config, prog.bitmap)
    result = {
        "benchmark": "simulate", **provenance(), "plan": str(plan_path), "head": head,
        "simulator": simulator, "config": config.to_dict(), "order": plan.orders[head],
        "bit_exact": True,
        "cycles": counters["CYCLES"], "ideal_cycles": ideal, "utilization": ideal / counters["CYCLES"],
        "dense_int8_cycles": dense_counters["CYCLES"],
        "dense_int8_ideal_cycles": ideal_cycles(config, dense.bitmap),
        "speedup_vs_dense_int8": dense_counters["CYCLES"] / counters["CYCLES"],
        "counters": {"blocks_8bit": counters["KEPT8"], "blocks_4bit": counters["KEPT4"],
                     "blocks_skipped": counters["SKIPPED"], "busy_cycles": counters["CYCLES"],
                     "array_beats": counters["ARRAY_BEATS"], "stall_cycles": counters["STALL_CYCLES"]},
        "dense_counters": dense_counters,
        "units": {"cycles": "engine clock cycles from start to done (K/V load to last output)",
                  "ideal_cycles": "kept-block MACs / (R*C*products per PE per cycle in each block's mode)",
                  "stall_cycles": "busy cycles in which the array took no input beat"},
        "seconds": round(time.monotonic() - start, 1),
    }
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    return result
