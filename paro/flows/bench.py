"""Benchmarks: run measured benches and write JSON (with config, git commit and units) and PNG plots.

Speed targets live here, never in timed tests.
"""

import json
import tempfile
import time
from pathlib import Path

from ..config import AcceleratorConfig
from ..errors import ParoError
from ..files import atomic_write, save_figure
from ..sim.runner import run_bench
from ..sw.plan import load_plan
from ..sw.program import engine_layer
from .provenance import progress, provenance
from .simulate import run_layers

__all__ = ["bench_array", "bench_engine_speed", "ARRAY_BENCH_SIZES"]

ARRAY_BENCH_SIZES = ((2, 2), (4, 4), (8, 8), (4, 8))


def bench_array(output, simulator="verilator", sizes=ARRAY_BENCH_SIZES, base=None, build_dir=None):
    """Throughput of the array for every mode and size; writes ``output`` (JSON) and a PNG beside it."""
    base = base or AcceleratorConfig()
    output = Path(output)
    records = []
    for n, (rows, cols) in enumerate(sizes, 1):
        config = AcceleratorConfig(rows=rows, cols=cols, block_size=base.block_size, head_dim=base.head_dim,
                                   bitwidths=base.bitwidths)
        progress(f"array bench {n}/{len(sizes)}: {rows}x{cols} on {simulator}")
        start = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "records.json"
            run_bench(config, "array", "paro.sim.bench_array_throughput", simulator, seed=20261125,
                      tag="throughput",
                      extra_env={"PARO_BENCH_OUT": str(out)}, build_dir=build_dir)
            if not out.exists():
                raise ParoError(f"the {rows}x{cols} throughput bench wrote no results; see build/sim for its log")
            found = json.loads(out.read_text())
        for record in found:
            record["config"] = config.to_dict()
        records += found
        progress(f"  done in {time.monotonic() - start:.0f} s")

    summary = {}
    for rows, cols in sizes:
        by_mode = {r["mode"]: r for r in records if (r["rows"], r["cols"]) == (rows, cols)}
        entry = {"int8_steady_utilization": by_mode["INT8"]["steady_utilization"],
                 "int8_utilization": by_mode["INT8"]["utilization"],
                 "int8_fill_drain_cycles": by_mode["INT8"]["fill_drain_cycles"]}
        for mode in ("INT4", "UINT4"):
            if mode in by_mode:
                entry[f"{mode.lower()}_vs_int8_products_per_cycle"] = (
                    by_mode[mode]["products_per_cycle"] / by_mode["INT8"]["products_per_cycle"])
        summary[f"{rows}x{cols}"] = entry
    result = {
        "benchmark": "array_throughput",
        **provenance(),
        "config": {**base.to_dict(), "rows": "per record", "cols": "per record", "acc_width": "per record"},
        "sizes": [f"{rows}x{cols}" for rows, cols in sizes],
        "simulator": simulator,
        "units": {"cycles": "clock cycles from the first input beat taken to the last output beat taken",
                  "ideal_cycles": "MACs / (R * C * products per PE per cycle)",
                  "utilization": "ideal_cycles / cycles (includes pipeline fill and drain)",
                  "steady_utilization": "depth / steady_cycles_per_tile (pipeline full)",
                  "fill_drain_cycles": "single-tile cycles minus depth",
                  "products_per_cycle": "MACs / cycles"},
        "records": records,
        "summary": summary,
    }
    return write_result(output, result, _plot_array)


def write_result(output, result, plotter):
    """Write a bench's ``result`` to ``output`` (JSON, atomically) and its plot beside it (``plotter(result,
    path)``, a PNG); return ``(result, plot path)``."""
    atomic_write(output, json.dumps(result, indent=2) + "\n")
    plot = Path(output).with_suffix(".png")
    plotter(result, plot)
    return result, plot


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path, plt):
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def _plot_array(result, path):
    plt = _pyplot()

    records = result["records"]
    sizes = list(dict.fromkeys(f"{r['rows']}x{r['cols']}" for r in records))
    modes = list(dict.fromkeys(r["mode"] for r in records))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(modes)
    for k, mode in enumerate(modes):
        rows = [next(r for r in records if f"{r['rows']}x{r['cols']}" == s and r["mode"] == mode) for s in sizes]
        xs = [i + k * width for i in range(len(sizes))]
        left.bar(xs, [r["products_per_cycle"] for r in rows], width, label=mode)
        right.bar(xs, [r["utilization"] for r in rows], width, label=f"{mode} (incl. fill/drain)")
    for ax in (left, right):
        ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(sizes))], sizes)
        ax.set_xlabel("array R x C")
        ax.legend(fontsize=8, loc="lower right")
    left.set_ylabel("products per cycle")
    left.set_title("Array throughput by PE mode")
    right.set_ylabel("ideal / measured cycles")
    right.set_ylim(0, 1.05)
    right.set_title(f"Utilization, {records[0]['tiles']} tiles of depth {records[0]['depth']}")
    fig.suptitle(f"paro array bench ({result['simulator']}, {result['commit'][:12]})", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)


#: Runs of the fast mode per bench (each a fresh process on a fresh copy of the binary, whose speed varies with
#: where its pages land: :func:`paro.sim.fast.run_fast`; the bench reports the median run). The cocotb
#: mode runs once: at 40 s a run its spread matters less than the fast mode's 1.7 s.
FAST_RUNS = 5
#: The fast mode's target on the ``small`` config (issue 10), in simulated cycles per second.
FAST_TARGET = 1_000_000


def bench_engine_speed(plan_path, output, head=1, build_dir=None):
    """Simulation speed of the engine's two run modes (cocotb bench, fast C++ harness) on one plan head, in
    one invocation, memory at one beat per cycle; writes ``output`` (JSON) and a PNG beside it. The fast
    mode runs :data:`FAST_RUNS` times and reports its median run, with every run's rate beside it."""
    output = Path(output)
    plan = load_plan(plan_path)
    layer = engine_layer(plan, [head])
    modes = {}
    for mode, runs in (("cocotb", 1), ("fast", FAST_RUNS)):
        stats = []
        for run in range(runs):
            progress(f"engine speed bench: head {head} in the {mode} mode on verilator, run {run + 1} of {runs}")
            [(totals, _)] = run_layers(plan.config, [layer], "verilator", gap=0, tag="speed", build_dir=build_dir,
                                       fast=mode == "fast", stats=stats)
        median = sorted(stats, key=lambda s: s["cycles_per_second"])[runs // 2]
        modes[mode] = {**median, "engine_cycles": totals["CYCLES"], "bit_exact": True,
                       "runs_cycles_per_second": [s["cycles_per_second"] for s in stats]}
    fast = modes["fast"]["cycles_per_second"]
    result = {
        "benchmark": "engine_simulation_speed", **provenance(), "plan": str(plan_path), "head": head,
        "config": plan.config.to_dict(), "simulator": "verilator", "modes": modes,
        "fast_vs_cocotb": fast / modes["cocotb"]["cycles_per_second"],
        "target": {"fast_cycles_per_second": FAST_TARGET}, "meets_target": fast >= FAST_TARGET,
        "units": {"cycles_per_second": "simulated engine clock cycles per wall-clock second of the run (build "
                                       "excluded; programming and reading back included); the median run's",
                  "runs_cycles_per_second": "every run's rate, in the order run",
                  "run_cycles": "cycles simulated", "wall_seconds": "seconds of the run"},
    }
    return write_result(output, result, _plot_speed)


def _plot_speed(result, path):
    plt = _pyplot()

    modes = result["modes"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(modes)
    bars = ax.bar(names, [modes[n]["cycles_per_second"] for n in names], color=["#888888", "#2a7ab9"])
    for bar, name in zip(bars, names):
        ax.annotate(f"{modes[name]['cycles_per_second']:,.0f}/s\n{modes[name]['wall_seconds']:.1f} s",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("simulated cycles per second")
    ax.set_title(f"Engine simulation speed, head {result['head']} ({modes['fast']['engine_cycles']:,} cycles), "
                 f"fast = {result['fast_vs_cocotb']:.0f}x cocotb", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)
