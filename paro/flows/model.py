"""``paro model``: the engine's cycles for a plan's heads from the cycle model (:mod:`paro.sw.cycles`), in
seconds instead of an RTL simulation's minutes or hours, with the same fields ``paro simulate`` reports.

Heads are spread over ``engines`` engines round robin (head h on engine h mod E), each engine running its heads
as one start; the engines share the memory's bandwidth equally (``bytes_per_cycle`` in total, ``None``: each
engine's bus peak, one AXI data beat a cycle). The layer takes as long as the slowest engine. The dense INT8
baseline is the same heads with every block kept at 8 bits, on the same engines and memory. ``--method
simpicker|both`` models the engine's block speculation (what ``paro simulate`` runs): the blocks it skips come
from the golden model's speculation on the plan's data (no attention run), its timing from the model.
"""

import json
import time

import numpy as np

from ..errors import ParoError
from ..files import atomic_write
from ..sw.contract import LUT_BLOCK
from ..sw.cycles import BREAKDOWN, Memory, layer_cycles
from ..sw.plan import load_plan
from ..sw.program import plan_workload, speculated_bitmap
from ..sw.simpicker import SimPickerParams
from .provenance import progress, provenance
from .simulate import engine_speculation, ideal_cycles

__all__ = ["model", "model_layer"]


def model_layer(config, bitmaps, rows=None, read_latency=0, bytes_per_cycle=None, engines=1, spec=False):
    """Model heads with ``bitmaps`` on ``engines`` engines sharing ``bytes_per_cycle`` (``spec``: every head runs
    block speculation, its bitmap the speculated one); return ``(cycles, per_head)``: the layer's cycles (the
    slowest engine's start) and per head ``(engine, HeadCycles)``."""
    if engines < 1:
        raise ParoError(f"engines must be >= 1, got {engines}")
    if read_latency < 0:
        raise ParoError(f"read latency must be >= 0 cycles, got {read_latency}")
    if bytes_per_cycle is not None and not bytes_per_cycle > 0:
        raise ParoError(f"memory bandwidth must be > 0 bytes per cycle, got {bytes_per_cycle}")
    share = None if bytes_per_cycle is None else bytes_per_cycle / engines
    memory = Memory(read_latency=read_latency, bytes_per_cycle=share)
    per_head, cycles = [None] * len(bitmaps), 0
    for engine in range(min(engines, len(bitmaps))):
        mine = list(range(engine, len(bitmaps), engines))
        totals, heads = layer_cycles(config, [bitmaps[h] for h in mine], rows=rows, memory=memory,
                                     specs=[spec] * len(mine))
        cycles = max(cycles, totals["cycles"])
        for h, head in zip(mine, heads):
            per_head[h] = (engine, head)
    return cycles, per_head


def model(plan_path, heads="all", rows=None, read_latency=0, bytes_per_cycle=None, engines=1, report=None,
          plan_layer=None, plan_step=None, method="paro", params=None):
    """Model heads of a plan (``rows``: a range of query blocks, default all) and their dense INT8 baseline;
    write ``report`` (JSON: totals at the top, ``per_head`` entries, the ``breakdown`` of where cycles go);
    return the dict. ``method`` and ``params`` as for :func:`paro.flows.simulate.simulate`."""
    start = time.monotonic()
    plan = load_plan(plan_path, plan_layer, plan_step)
    config = plan.config
    params = params or SimPickerParams.for_method(method)
    spec = engine_speculation(method, params, config)
    heads = list(range(plan.heads)) if heads == "all" else list(heads)
    for head in heads:
        if not 0 <= head < plan.heads:
            raise ParoError(f"head {head} out of range: the plan has {plan.heads} heads")
    blocks = plan.bitmap.shape[1]
    if rows is not None and rows.stop > blocks:
        raise ParoError(f"query-block rows {rows.start}..{rows.stop - 1} are not within the plan's {blocks} "
                        f"query blocks")
    window = rows or range(blocks)
    progress(f"cycle model: {len(heads)} head(s) on {engines} engine(s), query blocks {window.start}.."
             f"{window.stop - 1}, plan and dense INT8")
    options = dict(rows=rows, read_latency=read_latency, bytes_per_cycle=bytes_per_cycle, engines=engines)
    bitmaps = [plan.bitmap[h] for h in heads]
    if spec is not None:        # the blocks speculation leaves (SimPicker alone: of every block at 8 bits)
        workload = plan_workload(plan)
        bitmaps = [speculated_bitmap(plan, h, spec, workload, dense=method == "simpicker",
                                     own_order=method == "simpicker") for h in heads]
    cycles, per_head = model_layer(config, bitmaps, spec=spec is not None, **options)
    dense_bitmaps = [np.full((blocks, blocks), 8, dtype=np.uint8)] * len(heads)
    dense_cycles, dense_heads = model_layer(config, dense_bitmaps, **options)
    entries = []
    for head, bitmap, (engine, h), (_, dense) in zip(heads, bitmaps, per_head, dense_heads):
        ideal = ideal_cycles(config, bitmap[window.start:window.stop])
        entries.append({
            "head": head, "engine": engine, "order": plan.orders[head], "cycles": h.cycles, "ideal_cycles": ideal,
            "dense_int8_cycles": dense.cycles, "bytes_read": h.bytes_read, "bytes_written": h.bytes_written,
            "dense_int8_bytes_read": dense.bytes_read, "utilization": ideal / h.cycles,
            "speedup_vs_dense_int8": dense.cycles / h.cycles, "kv_cache_hit_rate": 1 - h.kv_fetches / h.kv_wants,
            "counters": {"blocks_8bit": h.kept8, "blocks_4bit": h.kept4, "blocks_2bit": h.kept2,
                         "blocks_skipped": h.skipped, "speculation_busy_cycles": h.spec_busy,
                         "blocks_lut_path": int((bitmap[window.start:window.stop] == LUT_BLOCK).sum()),
                         "speculation_wait_cycles": h.spec_wait},
            "breakdown": h.breakdown})
    breakdown = {k: sum(e["breakdown"][k] for e in entries) for k in BREAKDOWN}
    total = {"cycles": cycles, "ideal_cycles": sum(e["ideal_cycles"] for e in entries),
             "dense_int8_cycles": dense_cycles,
             "bytes_read": sum(e["bytes_read"] for e in entries),
             "dense_int8_bytes_read": sum(e["dense_int8_bytes_read"] for e in entries),
             "bytes_written": sum(e["bytes_written"] for e in entries)}
    result = {
        "benchmark": "model", **provenance(), "plan": str(plan_path), "plan_layer": plan_layer,
        "plan_step": plan_step, "heads": heads, "query_blocks": [window.start, window.stop - 1],
        "method": method, "simpicker": None if spec is None else {**params.to_dict(), "codes": list(spec)},
        "config": config.to_dict(), **total,
        "utilization": total["ideal_cycles"] * 1.0 / (cycles * engines),
        "speedup_vs_dense_int8": dense_cycles / cycles,
        "bytes_read_vs_dense": total["bytes_read"] / total["dense_int8_bytes_read"],
        "engines": engines,
        "memory": {"read_latency_cycles": read_latency, "bytes_per_cycle": bytes_per_cycle,
                   "bus_bytes_per_cycle": config.axi_data_bits // 8,
                   "sharing": "bandwidth split equally between the engines"},
        "breakdown": breakdown, "breakdown_meaning": BREAKDOWN,
        "units": {"cycles": "engine clock cycles of the layer: the slowest engine's start (descriptor checks, then "
                            "its heads); per head, its CYCLES counter (descriptor read to store)",
                  "ideal_cycles": "kept-block MACs / (R*C*products per PE per cycle in each block's mode)",
                  "bytes_read": "bytes the engines' AXI4 masters read for the heads (per-head counters: "
                                "descriptor, block table, bitmap rows, Q, K/V on cache misses)",
                  "breakdown": "cycles per category summed over heads (per engine they add up to its heads' "
                               "cycles)"},
        "per_head": entries, "seconds": round(time.monotonic() - start, 2),
    }
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    return result
