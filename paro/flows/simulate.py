"""``paro simulate``: run heads of a BlockPlan on the attention engine RTL and check them against the golden model.

One invocation builds the engine for the plan's configuration, runs the chosen heads (their bitmaps) as one
layer (one engine start, descriptors in memory) and the same heads as a dense INT8 baseline layer (every block
8-bit, none skipped, same array) through the same build, with everything in an AXI4 memory model (``gap``: the
probability that any bus channel pauses in a cycle; 0 is one beat per cycle), compares every output code with
:mod:`paro.sw.golden` and reports cycles, ideal cycles, bytes read and counters.

Failures are reported as what they are: a plan or program the engine cannot take (one line naming the
register or field, before anything is built), a simulator build failure, a run that did not finish, or an
output that differs from the golden model (the first differing beat).
"""

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from ..config import PEMode
from ..errors import ParoError
from ..files import atomic_write
from ..sim.engine_check import Mismatch
from ..sim.fast import run_fast
from ..sim.runner import SIMULATORS, BenchFailure, run_bench, simulator_problem
from ..sim.streams import CLOCK_NS
from ..sw.calibrate import IDENTITY
from ..sw.calibrate import dense_rows
from ..sw.calibrate import _Metrics as Metrics
from ..sw.contract import (LUT_BLOCK, MAX_BURST_BEATS, SPEC_LOW_BITS, SPEC_LUT_PATH, SPEC_SKIP_ONLY,
                           check_engine_config, check_layer, save_layer)
from ..sw.golden import LUT_QK_BITS
from ..sw.plan import load_plan
from ..sw.program import engine_layer, plan_workload
from ..sw.reorder import permutation_indices
from ..sw.simpicker import METHODS, SimPickerParams
from .provenance import progress, provenance

__all__ = ["simulate", "ideal_cycles", "run_layers", "engine_speculation"]


def ideal_cycles(config, bitmap):
    """Kept-block MACs over the array's peak in each block's mode: QK^T and PV, B*B*d MACs each; a LUT-path
    block's QK^T at the 4-bit peak and its PV at the LUT path's (``lut_lanes`` products a cycle)."""
    macs = config.block_size * config.block_size * config.head_dim
    peak = {b: config.rows * config.cols * PEMode.for_block(b, "qk").products_per_cycle for b in (2, 4, 8)}
    cost = {b: 2 * macs // peak[b] for b in peak}
    cost[LUT_BLOCK] = macs // peak[LUT_QK_BITS] + macs // config.lut_lanes
    return int(sum(cost[int(b)] for b in np.asarray(bitmap).ravel() if b))


def cycle_limit(config, layer, read_latency=0):
    """A generous bound on a layer's cycles (per head 4x ideal plus per-token and per-burst overheads): a
    hang, not a slow run."""
    limit = 10_000
    bursts = -(-config.block_size * config.head_dim * 8 // config.axi_data_bits // MAX_BURST_BEATS)
    for prog in layer.heads:
        # At most each query block's Q and bitmap row, and K and V of every kept block of every row.
        fetches = 2 * prog.q8.shape[0] // config.block_size + 2 * int(np.count_nonzero(prog.bitmap))
        limit += (4 * ideal_cycles(config, prog.bitmap) + 200 * prog.q8.shape[0] + 1000
                  + 4 * fetches * bursts * read_latency)
    return limit


def run_layers(config, layers, simulator, seed=20261125, gap=0.2, tag="engine", build_dir=None, read_latency=0,
               fast=False, stats=None, expect_errors=None):
    """Run engine layers (:class:`paro.sw.contract.EngineLayer`, one start each) in one build; return per
    layer ``(totals, per_head)`` counters.

    ``fast`` runs them in the fast mode (:mod:`paro.sim.fast`, Verilator only, no bus pauses) instead of the
    cocotb bench. ``stats`` (a list) receives the simulation speed: one entry per layer in the fast mode, one
    for the whole cocotb run (``run_cycles``, ``wall_seconds``, ``cycles_per_second``). Every layer is checked
    against the contract first, except those ``expect_errors`` (per layer ``None`` or ``(code, head)``) says
    the engine must refuse. Raises :class:`ParoError` saying what failed: the build (from the runner), a
    layer that did not finish, or the first output that differs from the golden model.
    """
    expect_errors = expect_errors or [None] * len(layers)
    for n, (layer, expected) in enumerate(zip(layers, expect_errors)):
        if expected is None:
            try:
                check_layer(config, layer)
            except ParoError as error:
                raise ParoError(f"layer {n} cannot run on this engine: {error}") from None
    limits = [cycle_limit(config, layer, read_latency) for layer in layers]
    if fast:
        if simulator != "verilator":
            raise ParoError(f"the fast mode runs on Verilator only, not {simulator}; drop --fast or use verilator")
        if gap:
            raise ParoError("the fast mode's memory never pauses; drop --gap, or run without --fast")
        try:
            results = run_fast(config, layers, build_dir=build_dir, read_latency=read_latency, cycle_limits=limits,
                               expect_errors=expect_errors)
        except Mismatch as error:
            raise _failure(simulator + " (fast mode)", error.status, error.program, error.detail) from None
        if stats is not None:
            stats.extend(s for _, _, s in results)
        return [(totals, per_head) for totals, per_head, _ in results]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"layer{n}.npz" for n in range(len(layers))]
        outcomes = [Path(tmp) / f"outcome{n}.json" for n in range(len(layers))]
        for path, layer, expected in zip(paths, layers, expect_errors):
            save_layer(config, layer, path, check=expected is None)
        env = {"PARO_LAYERS": os.pathsep.join(map(str, paths)),
               "PARO_OUTCOMES": os.pathsep.join(map(str, outcomes)),
               "PARO_CYCLE_LIMITS": os.pathsep.join(map(str, limits)),
               "PARO_EXPECT_ERRORS": json.dumps([list(e) if e else None for e in expect_errors]),
               "PARO_GAP": str(gap), "PARO_READ_LATENCY": str(read_latency)}
        try:
            results = run_bench(config, "engine", "paro.sim.test_engine", simulator, seed=seed, tag=tag,
                                extra_env=env, build_dir=build_dir)
        except BenchFailure as error:
            failed = [json.loads(o.read_text()) for o in outcomes if o.exists()]
            failed = [o for o in failed if o["status"] != "ok"]
            if not failed:
                raise ParoError(f"the engine bench on {simulator} failed before comparing any output: {error}") from None
            raise _failure(simulator, failed[0]["status"], failed[0]["program"], failed[0]["detail"]) from None
        if stats is not None:
            stats.append(_cocotb_speed(results))
        return [(o["totals"], o["per_head"]) for o in (json.loads(path.read_text()) for path in outcomes)]


def _cocotb_speed(results_xml):
    """Simulated cycles and wall seconds of a cocotb run (all its programs), from its JUnit XML."""
    case = ElementTree.parse(results_xml).find(".//testcase")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    cycles, seconds = float(properties["sim_time_duration"]) / CLOCK_NS, float(case.get("time"))
    return {"run_cycles": int(cycles), "wall_seconds": seconds, "cycles_per_second": cycles / seconds}


def _failure(where, status, layer, detail):
    what = {"mismatch": "did not match the golden model", "error": "refused a layer it should have run"}.get(
        status, "did not finish")
    return ParoError(f"the engine on {where} {what}: layer {layer}, {detail}")


def _summary(config, prog, counters):
    """Cycles, ideal cycles and bytes of one head (ideal over the query blocks it computes)."""
    rows = prog.rows                 # speculation's skips are not computed: not in the ideal either
    return {"cycles": counters["CYCLES"],
            "ideal_cycles": ideal_cycles(config, prog.computed_bitmap[rows.start:rows.stop]),
            "bytes_read": counters["BYTES_READ"], "bytes_written": counters["BYTES_WRITTEN"]}


def _ratios(entry):
    """Utilization, speedup and traffic ratio of a result entry with plan and dense sums."""
    return {"utilization": entry["ideal_cycles"] / entry["cycles"],
            "speedup_vs_dense_int8": entry["dense_int8_cycles"] / entry["cycles"],
            "bytes_read_vs_dense": entry["bytes_read"] / entry["dense_int8_bytes_read"]}


def engine_speculation(method, params, config):
    """``(important_code, negligible_code, SPEC mode)`` of the engine's block speculation for ``method`` (None
    for ``paro``), or a one-line refusal of what the engine RTL cannot run yet."""
    if method not in METHODS:
        raise ParoError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "paro":
        return None
    if not config.spec_lanes:
        raise ParoError(f"--method {method} needs an engine built with speculation; this plan's has none: calibrate "
                        f"it with --spec-lanes N (a power of two <= head_dim {config.head_dim})")
    if params.unimportant == "lut" and not config.lut_path:
        raise ParoError(f"--method {method} --unimportant lut needs an engine built with the LUT path; this plan's "
                        f"has none: calibrate it with --lut-path, or pass --unimportant low (unimportant blocks at 4 "
                        f"bits) or --unimportant full")
    if params.reuse_threshold:
        raise ParoError(f"--method {method}: token reuse is not in the engine RTL yet; pass --reuse-threshold 0")
    important, negligible, _ = params.codes(config)
    return important, negligible, {"low": SPEC_LOW_BITS, "lut": SPEC_LUT_PATH}.get(params.unimportant, SPEC_SKIP_ONLY)


def _quality(plan, workload, prog, head, own_order, totals):
    """Cosine and relative L1 of the head's output codes (the engine's, bit-exact) against fp64 dense
    attention, over the real query tokens of the query blocks it computes; also added to ``totals`` (the
    layer's, pooled over its heads)."""
    B = plan.config.block_size
    index = permutation_indices(plan.layout, IDENTITY if own_order else plan.orders[head])
    positions = np.arange(prog.rows.start * B, min(prog.rows.stop * B, len(index)))
    out = np.asarray(prog.codes)[positions].astype(np.float64) * 2.0 ** -prog.out_exp
    ref = dense_rows(*workload.head(head), index[positions], plan.config)
    totals.add(out, ref)
    cosine, rel_l1 = Metrics().add(out, ref).result()
    return {"cosine": cosine, "rel_l1": rel_l1}


def simulate(plan_path, simulator="verilator", heads=(0,), rows=None, report=None, gap=0.0, build_dir=None,
             read_latency=0, fast=False, plan_layer=None, plan_step=None, method="paro", params=None):
    """Simulate heads of a plan (``rows``: a range of query blocks, default all) plus their dense INT8
    baselines; write ``report`` (JSON: totals at the top, ``per_head`` entries); return the dict. ``fast``
    uses the fast run mode (Verilator, C++ harness) instead of the cocotb bench. ``plan_layer`` and
    ``plan_step`` pick the plan from a plan set (:func:`paro.sw.plan.load_plan`). ``method``
    (:data:`paro.sw.simpicker.METHODS`) with ``params`` (:class:`~paro.sw.simpicker.SimPickerParams`):
    ``simpicker`` runs the engine's block speculation on every block at 8 bits, tokens in their natural order
    with each head's own scales; ``both`` on the plan's bitmap, order and scales. Each head's entry gives its
    output quality against fp64 dense attention."""
    if simulator not in SIMULATORS:
        raise ParoError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    problem = simulator_problem(simulator)
    if problem:
        raise ParoError(problem)
    plan = load_plan(plan_path, plan_layer, plan_step)
    config = plan.config
    check_engine_config(config)
    params = params or SimPickerParams.for_method(method)
    spec = engine_speculation(method, params, config)
    own_order = method == "simpicker"
    heads = list(range(plan.heads)) if heads == "all" else list(heads)
    for head in heads:
        if not 0 <= head < plan.heads:
            raise ParoError(f"head {head} out of range: the plan has {plan.heads} heads")
    workload = plan_workload(plan)
    # The dense run keeps every key: a build whose score buffer is smaller runs it with a full-size score
    # buffer (nothing else differs, so the cycles are those of the same array and datapath).
    tokens = plan.bitmap.shape[1] * config.block_size
    dense_config = config if config.max_kept_keys >= tokens else dataclasses.replace(config, max_kept_keys=None)
    progress(f"golden model: {len(heads)} head(s) and their dense INT8 baselines")
    # SimPicker alone speculates on every block: like the dense run it may keep every key
    layer = engine_layer(plan, heads, workload=workload, rows=rows, dense=own_order, spec=spec, own_order=own_order)
    config = dense_config if own_order else config
    dense_layer = engine_layer(plan, heads, workload=workload, rows=rows, dense=True)
    for name, c, candidate in (("plan", config, layer), ("dense INT8 baseline", dense_config, dense_layer)):
        try:
            check_layer(c, candidate)
        except ParoError as error:
            raise ParoError(f"{name} cannot run on the engine built for this plan: {error}") from None
    first, count = layer.heads[0].rows.start, len(layer.heads[0].rows)
    ideal_total = sum(ideal_cycles(config, p.bitmap[first:first + count]) for p in layer.heads + dense_layer.heads)
    progress(f"{simulator}{' fast mode' if fast else ''}: {len(heads)} head(s) in one start, "
             f"query blocks {first}..{first + count - 1}, "
             f"plan and dense INT8 (~{ideal_total / 1e6:.1f}M ideal cycles)")
    start = time.monotonic()
    stats, options = [], dict(gap=gap, build_dir=build_dir, read_latency=read_latency, fast=fast)
    if dense_config == config:
        (totals, counters), (dense_totals, dense_counters) = run_layers(config, [layer, dense_layer], simulator,
                                                                        stats=stats, **options)
    else:
        [(totals, counters)] = run_layers(config, [layer], simulator, stats=stats, **options)
        [(dense_totals, dense_counters)] = run_layers(dense_config, [dense_layer], simulator, tag="engine-dense",
                                                      stats=stats, **options)
    per_head, quality = [], Metrics()
    for head, prog, dense, c, dc in zip(heads, layer.heads, dense_layer.heads, counters, dense_counters):
        plan_run, dense_run = _summary(config, prog, c), _summary(config, dense, dc)
        computed = slice(prog.rows.start, prog.rows.stop)
        speculated = int(((prog.bitmap != 0) & (prog.computed_bitmap == 0))[computed].sum())
        entry = {"head": head, "order": IDENTITY if own_order else plan.orders[head], "bit_exact": True, **plan_run,
                 **_quality(plan, workload, prog, head, own_order, quality),
                 "dense_int8_cycles": dense_run["cycles"], "dense_int8_ideal_cycles": dense_run["ideal_cycles"],
                 "dense_int8_bytes_read": dense_run["bytes_read"],
                 "counters": {"blocks_8bit": c["KEPT8"], "blocks_4bit": c["KEPT4"], "blocks_2bit": c["KEPT2"],
                              "blocks_skipped": c["SKIPPED"],
                              "busy_cycles": c["CYCLES"], "array_beats": c["ARRAY_BEATS"],
                              "stall_cycles": c["STALL_CYCLES"], "blocks_skipped_by_speculation": speculated,
                              "blocks_lut_path": int((prog.computed_bitmap[computed] == LUT_BLOCK).sum()),
                              "speculation_busy_cycles": c["SPEC_BUSY"], "speculation_wait_cycles": c["SPEC_WAIT"]},
                 "dense_counters": dc}
        per_head.append({**entry, **_ratios(entry)})
    # Totals of the whole start (the layer's registers: descriptor checks and per-head setup included).
    total = {"cycles": totals["CYCLES"], "ideal_cycles": sum(e["ideal_cycles"] for e in per_head),
             "bytes_read": totals["BYTES_READ"], "bytes_written": totals["BYTES_WRITTEN"],
             "dense_int8_cycles": dense_totals["CYCLES"],
             "dense_int8_ideal_cycles": sum(e["dense_int8_ideal_cycles"] for e in per_head),
             "dense_int8_bytes_read": dense_totals["BYTES_READ"], "heads_done": totals["HEADS_DONE"]}
    total["cosine"], total["rel_l1"] = quality.result()
    result = {
        "benchmark": "simulate", **provenance(), "plan": str(plan_path), "plan_layer": plan_layer,
        "plan_step": plan_step,
        "heads": heads,
        "query_blocks": [first, first + count - 1], "simulator": simulator, "mode": "fast" if fast else "cocotb",
        "method": method, "simpicker": None if spec is None else {**params.to_dict(), "codes": list(spec)},
        "config": config.to_dict(), "bit_exact": True, **total, **_ratios(total),
        "dense_int8_max_kept_keys": dense_config.max_kept_keys,
        "memory": {"model": "C++ AXI4 RAM (fast mode)" if fast else "cocotbext-axi AxiRam",
                   "pause_probability": gap, "read_latency_cycles": read_latency,
                   "axi_data_bits": config.axi_data_bits, "kv_cache_blocks": config.kv_cache_blocks},
        "units": {"cycles": "engine clock cycles from START to done for the whole layer (one start: descriptor "
                            "checks, then every head); per head, from reading its descriptor to its last write "
                            "response",
                  "bytes_read": "bytes the engine's AXI4 master read (descriptors, block tables, bitmap rows, Q, "
                                "and K/V blocks on cache misses)",
                  "ideal_cycles": "kept-block MACs / (R*C*products per PE per cycle in each block's mode)",
                  "stall_cycles": "busy cycles in which the array took no input beat",
                  "cosine, rel_l1": "the engine's output codes (bit-exact with the golden model) against fp64 dense "
                                    "attention, real query tokens of the computed query blocks (top level: "
                                    "pooled over the heads)",
                  "speculation_busy_cycles": "cycles the speculation path worked (K pooling, row classes); "
                                             "speculation_wait_cycles: those the controller waited for it"},
        "per_head": per_head, "simulation_speed": stats, "seconds": round(time.monotonic() - start, 1),
    }
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    return result
