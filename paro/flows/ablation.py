"""``paro bench simpicker``: the SimPicker ablation on ``small``, every row from one run.

Rows: dense INT8 (every block at 8 bits); PARO (its static plan, calibrated here at density 0.35 and 2.5
average bits); SimPicker with speculation only (block speculation and token reuse, unimportant blocks on the
full path, no grouping), plus the LUT path, plus grouping; PARO + SimPicker (SimPicker within the plan,
skipping nothing the plan keeps: :meth:`~paro.sw.simpicker.SimPickerParams.for_method`). Per
row: quality (golden model vs fp64 dense attention: cosine, rel_l1) on the calibration sample and on a
held-out sample, the decisions (block classes, reused tokens, speculation overhead) and **ideal** cycles from
:func:`paro.sw.simpicker.head_ideal_cycles` (analytical, every unit busy every cycle): not RTL cycles; the report
says so in its units. ``paro bench simpicker-rtl`` (:func:`bench_simpicker_rtl`) measures the rows the engine
RTL runs (block speculation) in RTL cycles.
"""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from ..sw.calibrate import calibrate
from ..sw.plan import save_plan
from ..sw.simpicker import SimPickerParams, evaluate
from ..sw.workloads import make_workload
from .bench import _pyplot, _save, write_result
from .precision import _config
from .provenance import progress, provenance
from .simulate import simulate

__all__ = ["bench_simpicker", "bench_simpicker_rtl", "PLAN_BUDGET", "VARIANTS", "RTL_VARIANTS"]

#: The PARO plan of the ablation: (density, average bits), cosine >= 0.99 on small.
PLAN_BUDGET = (0.35, 2.5)
#: (name, method, SimPicker switches) of each row after dense INT8.
VARIANTS = (("PARO", "paro", {}),
            ("SimPicker: speculation", "simpicker", {"unimportant": "full", "grouping": False}),
            ("+ LUT path", "simpicker", {"unimportant": "lut", "grouping": False}),
            ("+ grouping", "simpicker", {"unimportant": "lut", "grouping": True}),
            ("PARO + SimPicker", "both", {"unimportant": "lut", "grouping": True, "negligible_mass": 0.0}))


def _row(name, calibration, heldout):
    return {"name": name, "method": calibration["method"], "params": calibration["params"],
            "cosine": calibration["cosine"], "rel_l1": calibration["rel_l1"],
            "heldout_cosine": heldout["cosine"], "heldout_rel_l1": heldout["rel_l1"],
            "ideal_cycles": calibration["ideal_cycles"], "speedup_vs_dense_int8": calibration["speedup_vs_dense_int8"],
            "heldout_ideal_cycles": heldout["ideal_cycles"], "fractions": calibration["fractions"],
            "reused_tokens": calibration["reused_tokens"], "speculation_overhead": calibration["speculation_overhead"],
            "array_cycles": calibration["array_cycles"], "lut_cycles": calibration["lut_cycles"]}


def bench_simpicker(output, params=None):
    """Run the ablation; write ``output`` (JSON) and a PNG beside it; return ``(result, plot path)``."""
    output = Path(output)
    params = params or SimPickerParams()
    workload, holdout = make_workload("small"), make_workload("small", sample=1)
    config = _config(workload, (0, 4, 8))
    density, avg_bits = PLAN_BUDGET
    progress(f"simpicker bench: PARO plan of small at density {density}, {avg_bits} average bits")
    plan, _ = calibrate(workload, config, density=density, avg_bits=avg_bits, log=lambda message: None)
    dense_plan = dataclasses.replace(plan, bitmap=np.full_like(plan.bitmap, 8))
    rows = [_row("dense INT8", evaluate(workload, config, params, "paro", dense_plan),
                 evaluate(holdout, config, params, "paro", dense_plan, scales_from_plan=False))]
    for name, method, switches in VARIANTS:
        progress(f"simpicker bench: {name}")
        variant = dataclasses.replace(params, **switches)
        rows.append(_row(name, evaluate(workload, config, variant, method, plan),
                         evaluate(holdout, config, variant, method, plan, scales_from_plan=False)))
    dense_cycles = rows[0]["ideal_cycles"]
    for row in rows:
        row["speedup_vs_dense_int8"] = dense_cycles / row["ideal_cycles"]
    by_name = {row["name"]: row for row in rows}
    result = {
        "benchmark": "simpicker_ablation", **provenance(), "workload": workload.source(),
        "heldout_workload": holdout.source(), "config": config.to_dict(),
        "plan_budget": {"density": density, "avg_bits": avg_bits}, "params": params.to_dict(),
        "units": {"ideal_cycles": "analytical ideal cycles (sw.simpicker.head_ideal_cycles), all heads: array and "
                                  "LUT multiplier busy every cycle, the larger of the two plus the speculation's "
                                  "pooled products; NOT RTL cycles (the engine runs block speculation only: "
                                  "bench simpicker-rtl)",
                  "cosine, rel_l1": "golden-model output vs fp64 dense attention, calibration sample",
                  "heldout_cosine, heldout_rel_l1": "the same on sample 1 (SimPicker decides on it at run time; "
                                                    "PARO's plan from sample 0)",
                  "fractions": "blocks per speculation class among those the method could compute",
                  "speculation_overhead": "pooled-product cycles / ideal cycles"},
        "rows": rows,
        "grouping_gain": by_name["+ LUT path"]["ideal_cycles"] / by_name["+ grouping"]["ideal_cycles"],
        "combined_vs_paro": by_name["PARO"]["ideal_cycles"] / by_name["PARO + SimPicker"]["ideal_cycles"],
        "combined_vs_simpicker": by_name["+ grouping"]["ideal_cycles"] / by_name["PARO + SimPicker"]["ideal_cycles"],
    }
    return write_result(output, result, _plot)


def _speedup_bars(ax, rows, ylabel, title):
    """Bars of each row's speed-up over dense INT8, annotated; returns their x positions."""
    xs = np.arange(len(rows))
    ax.bar(xs, [row["speedup_vs_dense_int8"] for row in rows], color="#2a7ab9")
    for x, row in zip(xs, rows):
        ax.annotate(f"{row['speedup_vs_dense_int8']:.2f}x", (x, row["speedup_vs_dense_int8"]), ha="center",
                    va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return xs


def _plot(result, path):
    plt = _pyplot()
    rows = result["rows"]
    names = [row["name"].replace(": ", ":\n") for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    xs = _speedup_bars(left, rows, "ideal speed-up vs dense INT8 (analytical)",
                       "Ideal cycles, small (8 heads), not RTL")
    width = 0.38
    right.bar(xs - width / 2, [row["cosine"] for row in rows], width, label="calibration sample")
    right.bar(xs + width / 2, [row["heldout_cosine"] for row in rows], width, label="held-out sample")
    right.axhline(0.99, color="#aa3333", lw=0.8, ls="--", label="cosine 0.99")
    right.set_ylim(min(0.95, min(min(r["cosine"], r["heldout_cosine"]) for r in rows) - 0.005), 1.0)
    right.set_ylabel("cosine vs fp64 dense attention")
    right.set_title("Quality (golden model)")
    right.legend(fontsize=8, loc="lower left")
    for ax in (left, right):
        ax.set_xticks(xs, names, fontsize=7)
    fig.suptitle(f"paro SimPicker ablation ({result['commit'][:12]})", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)


#: (name, method, SimPicker switches) of the RTL ablation's engine runs: what the engine RTL runs of SimPicker
#: so far is block speculation, unimportant blocks on the full path, the low-bit path or the LUT path (no token
#: reuse or grouping yet).
RTL_VARIANTS = (("PARO", "paro", {}),
                ("SimPicker: block speculation", "simpicker", {"unimportant": "full"}),
                ("+ low-bit path", "simpicker", {"unimportant": "low"}),
                ("+ LUT path", "simpicker", {"unimportant": "lut"}),
                ("PARO + SimPicker: block speculation", "both", {"unimportant": "full"}),
                ("PARO + SimPicker: + low-bit path", "both", {"unimportant": "low"}),
                ("PARO + SimPicker: + LUT path", "both", {"unimportant": "lut"}),
                ("PARO + SimPicker: negligible 0.02", "both", {"unimportant": "full", "negligible_mass": 0.02}))
#: SimPicker's mechanisms the RTL ablation cannot run yet (the engine refuses them with one line).
NOT_IN_RTL = ("token reuse", "grouping")
#: Heads of small the RTL ablation simulates: all of them, as the ideal ablation.
RTL_HEADS = tuple(range(8))
#: The RTL ablation's engine: speculation on 8 multipliers, the LUT path on ``head_dim`` (64) lanes, one key's V
#: row a cycle per query: a LUT-path block's PV in ``B x B`` cycles, 4x the array's INT8 rate (16 products).
RTL_BUILD = {"spec_lanes": 8, "lut_path": True, "lut_lanes": 64}


def bench_simpicker_rtl(output, heads=RTL_HEADS, build_dir=None):
    """The ablation from RTL cycles: the same PARO plan of small as :func:`bench_simpicker` on an engine built
    with speculation and the LUT path (:data:`RTL_BUILD`), ``heads`` simulated (fast mode, bit-exact) as dense
    INT8, PARO, SimPicker's block speculation alone and within the plan, with unimportant blocks on each path;
    each row's cycles, quality and speculation counters. Writes ``output`` (JSON) and a PNG beside it; returns
    ``(result, plot path)``."""
    output = Path(output)
    workload = make_workload("small")
    config = dataclasses.replace(_config(workload, (0, 4, 8)), **RTL_BUILD)
    density, avg_bits = PLAN_BUDGET
    progress(f"simpicker RTL bench: PARO plan of small at density {density}, {avg_bits} average bits")
    plan, _ = calibrate(workload, config, density=density, avg_bits=avg_bits, log=lambda message: None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan_path = Path(tmp) / "small_spec_plan.npz"
        save_plan(plan, plan_path)
        for name, method, switches in RTL_VARIANTS:
            progress(f"simpicker RTL bench: {name}, heads {list(heads)}")
            params = SimPickerParams.for_method(method, reuse_threshold=0.0, **switches)
            run = simulate(plan_path, heads=list(heads), build_dir=build_dir, fast=True, method=method,
                           params=params)
            if not rows:
                rows.append(_rtl_row("dense INT8", "paro", None, run, dense=True))
            rows.append(_rtl_row(name, method, params, run))
    dense = rows[0]["cycles"]
    for row in rows:
        row["speedup_vs_dense_int8"] = dense / row["cycles"]
    result = {
        "benchmark": "simpicker_rtl_ablation", **provenance(), "workload": workload.source(), "heads": list(heads),
        "config": config.to_dict(), "plan_budget": {"density": density, "avg_bits": avg_bits},
        "not_in_rtl": list(NOT_IN_RTL),
        "units": {"cycles": "engine clock cycles (RTL, Verilator fast mode, bit-exact with the golden model), the "
                            "heads' own counters summed (descriptor to last write)",
                  "cosine, rel_l1": "the engine's outputs vs fp64 dense attention, real query tokens, pooled over "
                                    "the heads (worst_head_cosine: the lowest head's)",
                  "blocks_skipped_by_speculation": "kept blocks of the bitmap the engine's speculation skipped",
                  "blocks_lut_path": "kept blocks the engine's speculation put on the LUT path",
                  "speculation_busy_cycles, speculation_wait_cycles": "cycles the speculation path worked, and "
                                                                      "those the engine waited for it"},
        "rows": rows,
    }
    return write_result(output, result, _plot_rtl)


def _rtl_row(name, method, params, run, dense=False):
    """A row of the RTL ablation from a :func:`~paro.flows.simulate.simulate` result (its dense baseline with
    ``dense``)."""
    heads = run["per_head"]
    if dense:
        return {"name": name, "method": method, "params": None,
                "cycles": sum(h["dense_int8_cycles"] for h in heads), "cosine": None, "rel_l1": None,
                "blocks_skipped_by_speculation": 0, "blocks_lut_path": 0, "speculation_busy_cycles": 0,
                "speculation_wait_cycles": 0}
    counters = [h["counters"] for h in heads]
    return {"name": name, "method": method, "params": params.to_dict(), "cycles": sum(h["cycles"] for h in heads),
            "cosine": run["cosine"], "rel_l1": run["rel_l1"],
            "worst_head_cosine": min(h["cosine"] for h in heads),
            "per_head": [{key: h[key] for key in ("head", "cycles", "cosine", "rel_l1")} for h in heads],
            **{key: sum(c[key] for c in counters) for key in ("blocks_skipped_by_speculation", "blocks_lut_path",
                                                              "speculation_busy_cycles", "speculation_wait_cycles")}}


def _plot_rtl(result, path):
    plt = _pyplot()
    rows = result["rows"]
    names = [row["name"].replace(": ", ":\n").replace(", ", ",\n") for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    xs = _speedup_bars(left, rows, "speed-up vs dense INT8 (RTL cycles)", f"Engine RTL cycles, small heads "
                                                                          f"{result['heads']}")
    quality = [(x, row) for x, row in zip(xs, rows) if row["cosine"] is not None]
    right.bar([x for x, _ in quality], [row["cosine"] for _, row in quality], color="#3a9a5a")
    right.axhline(0.99, color="#aa3333", lw=0.8, ls="--", label="cosine 0.99")
    right.set_ylim(min(0.95, min(row["cosine"] for _, row in quality) - 0.005), 1.0)
    right.set_ylabel("cosine vs fp64 dense attention (all heads)")
    right.set_title("Quality of the engine's outputs")
    right.legend(fontsize=8, loc="lower left")
    for ax in (left, right):
        ax.set_xticks(xs, names, fontsize=7)
    fig.suptitle(f"paro SimPicker ablation from RTL ({result['commit'][:12]}); not in the RTL yet: "
                 f"{', '.join(result['not_in_rtl'])}", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)
