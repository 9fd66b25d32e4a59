"""``paro bench precision``: what 2-bit blocks buy on the ``small`` workload, measured in one run.

Two parts, written to one JSON (and a PNG beside it):

* **cycles**: head 1 of ``small`` at density 0.25 (the top-mass quarter of its blocks kept), planned at
  {0, 4, 8} with its smallest budget (1.0 average bits: every kept block 4-bit) and at {0, 2, 4, 8} with the
  same budget and with 0.75 bits, with the default K cuts and with both leading-zero cuts (``k4_cut``,
  ``k2_cut``); each plan's head run bit-exact on the engine RTL (Verilator, fast mode, AXI memory at one beat
  per cycle), with its ideal cycles and the head's cosine and rel_l1 against fp64 from the calibration; the
  same head's dense INT8 run once.
* **quality**: the whole ``small`` layer (8 heads) at 4.80 average bits, no density (PARO's budget), planned
  at {0, 4, 8} and {0, 2, 4, 8} under each error metric, the same with both leading-zero cuts (output
  metrics), and the all-8-bit dense plan: bits mix, cosine, rel_l1 (golden model vs fp64), the same on a
  held-out sample, the integer program's gap to the Lagrangian.
"""

from pathlib import Path

from ..config import AcceleratorConfig
from ..sw.calibrate import ERROR_METRICS, calibrate, fitting_seq_len
from ..sw.program import engine_layer
from ..sw.workloads import make_workload
from .bench import _pyplot, _save, write_result
from .provenance import progress, provenance
from .simulate import ideal_cycles, run_layers

__all__ = ["bench_precision", "cut_label", "CYCLE_PLANS", "QUALITY_PLANS"]

#: The default K cuts.
DEFAULT_CUTS = {"k4_cut": "round", "k2_cut": "block"}
#: Both leading-zero cuts (the 2-bit one where the plan has 2-bit blocks).
LZ_CUTS = {"k4_cut": "leading-zero", "k2_cut": "leading-zero"}
#: (bitwidths, average bits, K cuts) of the plans whose head 1 the cycles part runs at density 0.25.
CYCLE_PLANS = tuple((bits, avg_bits, cuts) for cuts in (DEFAULT_CUTS, LZ_CUTS)
                    for bits, avg_bits in (((0, 4, 8), 1.0), ((0, 2, 4, 8), 1.0), ((0, 2, 4, 8), 0.75)))
#: (bitwidths, average bits, error metric, K cuts) of the quality part's layer plans (no density); the
#: all-8-bit plan last.
QUALITY_PLANS = tuple((bits, 4.8, metric, DEFAULT_CUTS) for metric in ERROR_METRICS
                      for bits in ((0, 4, 8), (0, 2, 4, 8))) \
    + tuple((bits, 4.8, metric, LZ_CUTS) for metric in ("output", "output-mse") for bits in ((0, 4, 8), (0, 2, 4, 8))) \
    + (((0, 4, 8), 8.0, "probability", DEFAULT_CUTS),)
HEAD = 1


def _config(workload, bitwidths, cuts=None):
    """The engine ``paro calibrate`` targets by default for this workload and bitwidth set, with the K
    ``cuts`` (``k4_cut``, ``k2_cut``; a bitwidth's cut is dropped where the set lacks it)."""
    block_size = AcceleratorConfig.block_size
    cuts = {name: cut for name, cut in (cuts or {}).items() if int(name[1]) in bitwidths}
    return AcceleratorConfig(head_dim=workload.head_dim, bitwidths=bitwidths,
                             max_seq_len=fitting_seq_len(workload.layout, block_size),
                             max_heads=max(AcceleratorConfig.max_heads, workload.heads), **cuts)


def _cuts(config):
    return {"k4_cut": config.k4_cut, "k2_cut": config.k2_cut}


def _mix(bitmap, bitwidths):
    return {str(b): int((bitmap == b).sum()) for b in bitwidths}


def _cycles_part(build_dir):
    workload = make_workload("small", heads=HEAD + 1)
    rows, dense = [], None
    for bitwidths, avg_bits, cuts in CYCLE_PLANS:
        progress(f"precision bench: head {HEAD} at density 0.25, bitwidths {bitwidths}, {avg_bits} average bits, "
                 f"K cuts {cuts}")
        plan, report = calibrate(workload, _config(workload, bitwidths, cuts), density=0.25, avg_bits=avg_bits,
                                 error_metric="output", log=lambda message: None)
        [(_, [counters])] = run_layers(plan.config, [engine_layer(plan, [HEAD])], "verilator", gap=0,
                                       tag="precision", build_dir=build_dir, fast=True)
        if dense is None:
            [(_, [dense])] = run_layers(plan.config, [engine_layer(plan, [HEAD], dense=True)], "verilator", gap=0,
                                        tag="precision", build_dir=build_dir, fast=True)
        head = report["heads"][HEAD]
        rows.append({"bitwidths": list(bitwidths), "avg_bits": avg_bits, **_cuts(plan.config), "bit_exact": True,
                     "blocks_by_bits": head["blocks_by_bits"], "cycles": counters["CYCLES"],
                     "ideal_cycles": ideal_cycles(plan.config, plan.bitmap[HEAD]),
                     "cosine": head["cosine"], "rel_l1": head["rel_l1"],
                     "counters": {name: counters[name] for name in ("KEPT8", "KEPT4", "KEPT2", "SKIPPED")}})
    return {"head": HEAD, "density": 0.25, "error_metric": "output", "dense_int8_cycles": dense["CYCLES"],
            "plans": rows}


def _quality_part():
    workload, holdout = make_workload("small"), make_workload("small", sample=1)
    rows = []
    for bitwidths, avg_bits, metric, cuts in QUALITY_PLANS:
        progress(f"precision bench: the small layer at {avg_bits} average bits, bitwidths {bitwidths}, {metric}, "
                 f"K cuts {cuts}")
        config = _config(workload, bitwidths, cuts)
        plan, report = calibrate(workload, config, avg_bits=avg_bits, error_metric=metric, holdout=holdout,
                                 log=lambda message: None)
        allocation = report["allocation"]
        rows.append({"bitwidths": list(bitwidths), "avg_bits": report["avg_bits"], "error_metric": metric,
                     **_cuts(config),
                     "blocks_by_bits": _mix(plan.bitmap, bitwidths), "density": report["density"],
                     "cosine": report["cosine"], "rel_l1": report["rel_l1"],
                     "heldout_cosine": report["heldout"]["cosine"], "heldout_rel_l1": report["heldout"]["rel_l1"],
                     "ilp_objective": allocation.get("objective"),
                     "lagrangian_objective": allocation.get("lagrangian_objective")})
    dense = rows[-1]
    for row in rows:
        row["rel_l1_vs_dense"] = row["rel_l1"] / dense["rel_l1"]
    return {"workload": workload.source(), "holdout": holdout.source(), "plans": rows}


def bench_precision(output, build_dir=None):
    """Run both parts; write ``output`` (JSON) and a PNG beside it; return ``(result, png path)``."""
    output = Path(output)
    cycles = _cycles_part(build_dir)
    quality = _quality_part()
    result = {
        "benchmark": "precision_small", **provenance(),
        "config": "per plan: paro calibrate's default engine for small (4x4 array, B 64, d 64) with the plan's "
                  "bitwidths; cycles on Verilator, fast mode, memory at one beat per cycle",
        "cycles": cycles, "quality": quality,
        "units": {"cycles": "engine clock cycles of the head (its CYCLES counter)",
                  "ideal_cycles": "kept-block MACs over the array's peak in each block's mode",
                  "cosine, rel_l1": "golden-model output vs fp64 dense attention (rel_l1: sum |error| / sum |fp64|)",
                  "rel_l1_vs_dense": "rel_l1 over the all-8-bit dense plan's, same run"},
    }
    return write_result(output, result, _plot)


def cut_label(row):
    """How a result row's K was cut, in words: "" (the default cuts), "leading-zero K4" or "leading-zero K4+K2"
    (the 2-bit cut only where the row has 2-bit blocks)."""
    cuts = [f"K{bits}" for bits, name in ((4, "k4_cut"), (2, "k2_cut"))
            if row.get(name) == "leading-zero" and bits in row["bitwidths"]]
    return f"leading-zero {'+'.join(cuts)}" if cuts else ""


def _label(row):
    cut = cut_label(row)
    return "{" + ",".join(str(b) for b in row["bitwidths"]) + "} @" + f"{row['avg_bits']:.2f}" \
        + (f"\n{cut.replace('leading-zero', 'LZ')}" if cut else "")


def _plot(result, path):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": [7, 11]})
    cycles = result["cycles"]
    names = ["dense INT8"] + [_label(row) for row in cycles["plans"]]
    values = [cycles["dense_int8_cycles"]] + [row["cycles"] for row in cycles["plans"]]
    bars = left.bar(names, values, color=["#888888"] + ["#2a7ab9"] * len(cycles["plans"]))
    for bar, row in zip(bars[1:], cycles["plans"]):
        left.annotate(f"{row['cycles']:,}\ncos {row['cosine']:.4f}", (bar.get_x() + bar.get_width() / 2,
                      bar.get_height()), ha="center", va="bottom", fontsize=7)
    left.set_yscale("log")
    left.set_ylabel("engine cycles (RTL)")
    left.set_title(f"small head {cycles['head']}, density {cycles['density']}", fontsize=9)
    left.tick_params(axis="x", labelsize=7)
    quality = result["quality"]["plans"]
    labels = [_label(row) + ("" if row["avg_bits"] == 8 else f"\n{row['error_metric']}") for row in quality]
    right.bar(labels, [row["rel_l1"] for row in quality], color="#2a7ab9", label="calibration data")
    right.plot(labels, [row["heldout_rel_l1"] for row in quality], "o", color="#d95f02", label="held-out sample")
    right.set_ylabel("rel_l1 vs fp64")
    right.set_title("small layer, average bits", fontsize=9)
    right.tick_params(axis="x", labelsize=6)
    right.legend(fontsize=7)
    fig.suptitle(f"paro precision bench ({result['commit'][:12]})", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)
