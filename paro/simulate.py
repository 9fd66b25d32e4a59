"""``paro simulate``: run a BlockPlan head on the attention engine RTL and check it against the golden model.

One invocation builds the engine for the plan's configuration, runs the plan's head (its bitmap) and the
same head as a dense INT8 baseline (every block 8-bit, none skipped, same array) through the same build,
compares every output code with :mod:`sw.golden` and reports cycles, ideal cycles and counters.
"""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .config import PEMode
from .errors import ParoError
from .files import atomic_write

__all__ = ["simulate", "ideal_cycles", "run_programs"]


def ideal_cycles(config, bitmap):
    """Kept-block MACs over the array's peak in each block's mode: QK^T and PV, B*B*d MACs each."""
    per_block = 2 * config.block_size * config.block_size * config.head_dim
    peak = {b: config.rows * config.cols * PEMode.for_block(b, "qk").products_per_cycle for b in (4, 8)}
    return int(sum(per_block // peak[int(b)] for b in np.asarray(bitmap).ravel() if b))


def run_programs(config, programs, simulator, seed=20261125, gap=0.2, tag="engine"):
    """Run engine programs (list of ``sw.program.EngineProgram``) in one build; returns their counters.

    Raises ``ParoError`` if any output code differs from the golden model (the bench asserts bit-exactness).
    """
    from sim.runner import run_bench
    from sw.program import save_program

    with tempfile.TemporaryDirectory() as tmp:
        paths, outs = [], []
        limit = 0
        for n, prog in enumerate(programs):
            path = Path(tmp) / f"program{n}.npz"
            save_program(prog, path)
            paths.append(str(path))
            outs.append(Path(tmp) / f"counters{n}.json")
            limit = max(limit, 4 * ideal_cycles(config, prog.bitmap) + 200 * prog.q8.shape[0] + 10_000)
        try:
            run_bench(config, "engine", "sim.test_top", simulator, seed=seed, tag=tag, extra_env={
                "PARO_PROGRAMS": os.pathsep.join(paths), "PARO_COUNTERS_OUT": os.pathsep.join(map(str, outs)),
                "PARO_CYCLE_LIMIT": str(limit), "PARO_GAP": str(gap)})
        except SystemExit as error:
            raise ParoError(f"the engine on {simulator} did not match the golden model (exit {error.code}); "
                            f"see the bench log above") from None
        except ParoError as error:
            raise ParoError(f"the engine on {simulator} did not match the golden model: {error}") from None
        return [json.loads(out.read_text()) for out in outs]


def simulate(plan_path, simulator="verilator", head=0, report=None, gap=0.0):
    """Simulate one head of a plan plus its dense INT8 baseline; write ``report`` (JSON); return the dict."""
    from sim.runner import SIMULATORS, simulator_problem
    from sw.plan import load_plan
    from sw.program import engine_program, plan_workload
    from .bench import git_commit

    if simulator not in SIMULATORS:
        raise ParoError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    problem = simulator_problem(simulator)
    if problem:
        raise ParoError(problem)
    plan = load_plan(plan_path)
    config = plan.config
    if 4 not in config.bitwidths or set(config.bitwidths) - {0, 4, 8}:
        raise ParoError(f"the engine computes bitwidths {{0, 4, 8}}; the plan uses {list(config.bitwidths)}")
    if config.max_seq_len > 4096:
        raise ParoError(f"the plan's max_seq_len {config.max_seq_len} needs a score buffer too large to "
                        f"simulate (limit 4096 tokens); simulate a smaller workload")
    workload = plan_workload(plan)
    prog = engine_program(plan, head, workload=workload)
    dense = engine_program(plan, head, bitmap=np.full_like(plan.bitmap[head], 8), workload=workload)
    from hw.top import MIN_SCORE_SHIFT
    for p in (prog, dense):
        if p.registers["SCORE_SHIFT"] < MIN_SCORE_SHIFT or not 1 <= p.registers["FINAL_SHIFT"] < 128:
            raise ParoError(f"head {head}'s scales give shifts the engine does not support "
                            f"({p.registers}); recalibrate with --block-size or check the Q/K/V scales")
    start = time.monotonic()
    counters, dense_counters = run_programs(config, [prog, dense], simulator, gap=gap)
    ideal = ideal_cycles(config, prog.bitmap)
    result = {
        "benchmark": "simulate", "commit": git_commit(), "plan": str(plan_path), "head": head,
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
