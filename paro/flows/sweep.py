"""``paro sweep``: latency, utilization and estimated area of one engine over array size, block size, density
and bit budget, with the Pareto front of latency against area (PNG).

Every point is the engine running a whole layer of a built-in workload (all its heads in one start) from the
cycle model (:mod:`paro.sw.cycles`), with a plan calibrated for the point's block size, density and bits per
kept block. The work goes through Dask (``dask.distributed``): a calibration per (block size, density,
bits), a generic Yosys synthesis of the PE per block size (the accumulator width follows the block size),
then a model run per point once its plan is there, on a local cluster (``workers`` processes) or on the
cluster at ``scheduler``, so the same command runs on many machines.

Area estimate (transistors, stated in the report): ``R x C`` PEs at the synthesised PE's Yosys CMOS
transistor count, plus 6 transistors per bit of every engine buffer (:func:`paro.sw.contract.engine_buffers`,
the score buffer sized for the plan's longest row, ``kv_cache_blocks`` cache slots). Control and the
per-column datapath (score unit, P lanes, accumulators) are left out: the same for every point of a size.
"""

import logging
import os
import tempfile
import time

import numpy as np

from ..config import AcceleratorConfig
from ..errors import ParoError
from ..sw.calibrate import calibrate
from ..sw.contract import engine_buffers
from ..sw.cycles import Memory, layer_cycles
from ..sw.workloads import make_workload
from .bench import _pyplot, _save, write_result
from .project import engine_for
from .provenance import progress, provenance
from .simulate import ideal_cycles
from .synth import generic_stats

__all__ = ["sweep", "pareto_front", "SRAM_TRANSISTORS_PER_BIT", "WORKLOADS"]

SRAM_TRANSISTORS_PER_BIT = 6
WORKLOADS = ("tiny", "small", "cogvideox")


def pareto_front(points):
    """Indices of the points (tuples of costs, lower is better) that no other point dominates (no worse in
    every cost and better in one)."""
    points = [tuple(p) for p in points]
    return [i for i, p in enumerate(points)
            if not any(all(a <= b for a, b in zip(q, p)) and q != p for q in points)]


def _calibrate_task(workload, heads, block_size, density, kept_bits, max_seq_len):
    """A plan's bitmaps and quality for one (block size, density, bits) (a Dask task; its heads in this task's
    thread: the cluster's workers are the parallelism)."""
    w = make_workload(workload, heads=heads)
    config = AcceleratorConfig(block_size=block_size, head_dim=w.head_dim, max_seq_len=max_seq_len)
    plan, report = calibrate(w, config, density=density, avg_bits=density * kept_bits, jobs=1)
    return {"bitmaps": np.asarray(plan.bitmap), "config": plan.config.to_dict(), "cosine": report["cosine"],
            "rel_l1": report["rel_l1"]}


def _pe_task(config_dict):
    """The engine PE's generic synthesis for a configuration (a Dask task): its CMOS transistor estimate."""
    config = AcceleratorConfig.from_dict(config_dict)
    with tempfile.TemporaryDirectory(prefix="paro-sweep-pe-") as work:
        stats = generic_stats(config, "pe", work)
    return {"cmos_transistors": stats["cmos_transistors"], "cells": stats["cells"], "acc_width": config.acc_width}


def _point_task(plan, pe, rows, cols, kv_cache_blocks, frequency_ghz, read_latency):
    """One design point on the cycle model (a Dask task)."""
    base = AcceleratorConfig.from_dict(plan["config"])
    bitmaps = plan["bitmaps"]
    config = engine_for(base, bitmaps, rows, cols, kv_cache_blocks, max_heads=max(base.max_heads, len(bitmaps)))
    totals, heads = layer_cycles(config, list(bitmaps), memory=Memory(read_latency))
    ideal = sum(ideal_cycles(config, b) for b in bitmaps)
    buffer_bits = sum(b["bits"] for b in engine_buffers(config).values())
    pe_area = pe["cmos_transistors"] * rows * cols
    return {"rows": rows, "cols": cols, "block_size": base.block_size, "cycles": totals["cycles"],
            "latency_us": totals["cycles"] / (frequency_ghz * 1e3), "ideal_cycles": ideal,
            "utilization": ideal / totals["cycles"], "bytes_read": totals["bytes_read"],
            "kv_cache_hit_rate": 1 - sum(h.kv_fetches for h in heads) / sum(h.kv_wants for h in heads),
            "pe_transistors": pe_area, "buffer_bits": buffer_bits,
            "area_transistors": pe_area + SRAM_TRANSISTORS_PER_BIT * buffer_bits}


def _axis(name, values, kind, check):
    try:
        parsed = [kind(v) for v in values.split(",") if v.strip()] if isinstance(values, str) else list(values)
    except ValueError:
        raise ParoError(f"--{name} must be a comma-separated list, got {values!r}") from None
    if not parsed:
        raise ParoError(f"--{name} is empty")
    for v in parsed:
        problem = check(v)
        if problem:
            raise ParoError(f"--{name}: {problem}")
    return parsed


def _array(text):
    try:
        r, c = (int(x) for x in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(text) from None
    return r, c


def _pow2(v):
    return v >= 1 and v & (v - 1) == 0


def _axes(arrays, block_sizes, densities, kept_bits):
    arrays = _axis("arrays", arrays, _array, lambda rc: None if all(_pow2(x) for x in rc)
                   else f"{rc[0]}x{rc[1]}: rows and columns must be powers of two")
    block_sizes = _axis("block-sizes", block_sizes, int, lambda b: None if _pow2(b) and b >= 8
                        else f"block size {b} must be a power of two >= 8")
    densities = _axis("densities", densities, float, lambda d: None if 0 < d <= 1 else f"density {d} not in (0, 1]")
    kept_bits = _axis("kept-bits", kept_bits, float, lambda b: None if 4 <= b <= 8
                      else f"{b} bits per kept block: the engine's kept blocks are 4 or 8 bits, so 4 to 8")
    return arrays, block_sizes, densities, kept_bits


def _client(scheduler, workers):
    from dask.distributed import Client, LocalCluster     # (dask takes a second to import: only when sweeping)
    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as error:
            raise ParoError(f"cannot reach the Dask scheduler at {scheduler}: {error}; start one with "
                            f"'dask scheduler' or leave out --scheduler for a local cluster") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def sweep(workload="small", heads=None, arrays="4x4,8x8,8x16,16x16", block_sizes="32,64",
          densities="0.15,0.25,0.35", kept_bits="5,7", kv_cache_blocks=16, frequency_ghz=1.0, read_latency=0,
          scheduler=None, workers=None, report=None):
    """Run the sweep; write ``report`` (JSON) and the Pareto PNG beside it; return the dict."""
    if workload not in WORKLOADS:
        raise ParoError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    arrays, block_sizes, densities, kept_bits = _axes(arrays, block_sizes, densities, kept_bits)
    if kv_cache_blocks < 1 or not frequency_ghz > 0 or read_latency < 0:
        raise ParoError("--kv-cache-blocks must be >= 1, --frequency-ghz > 0 and --read-latency >= 0")
    w = make_workload(workload, heads=heads)
    tokens, max_seq_len = w.layout.tokens, 1 << max(w.layout.tokens - 1, 1).bit_length()
    for B in block_sizes:
        if B > tokens:
            raise ParoError(f"block size {B} is larger than the {workload} workload's {tokens} tokens")
    workers = workers or max(1, os.cpu_count() or 1)
    start = time.monotonic()
    from dask.distributed import as_completed
    client, cluster = _client(scheduler, workers)
    try:
        progress(f"sweep on Dask ({scheduler or f'local cluster, {workers} worker(s)'}): "
                 f"{len(block_sizes) * len(densities) * len(kept_bits)} calibrations of {workload}, "
                 f"{len(block_sizes)} PE syntheses, {len(arrays) * len(block_sizes) * len(densities) * len(kept_bits)} "
                 f"points")
        pes = {B: client.submit(_pe_task, AcceleratorConfig(block_size=B, head_dim=w.head_dim,
                                                            max_seq_len=max_seq_len).to_dict(), pure=False)
               for B in block_sizes}
        plans, futures = {}, {}
        for B in block_sizes:
            for d in densities:
                for b in kept_bits:
                    plans[B, d, b] = client.submit(_calibrate_task, workload, heads, B, d, b, max_seq_len, pure=False)
                    for rows, cols in arrays:
                        future = client.submit(_point_task, plans[B, d, b], pes[B], rows, cols, kv_cache_blocks,
                                               frequency_ghz, read_latency, pure=False)
                        futures[future] = (rows, cols, B, d, b)
        points = []
        for n, future in enumerate(as_completed(list(futures)), 1):
            rows, cols, B, d, b = futures[future]
            point = future.result()
            plan = plans[B, d, b].result()
            points.append({**point, "density_target": d, "kept_bits_target": b,
                           "density": float(np.count_nonzero(plan["bitmaps"]) / plan["bitmaps"].size),
                           "kept_bits": float(plan["bitmaps"][plan["bitmaps"] > 0].mean()),
                           "cosine": plan["cosine"], "rel_l1": plan["rel_l1"]})
            progress(f"  {n}/{len(futures)} points: {rows}x{cols}, B {B}, density {d}, {b} bits -> "
                     f"{point['cycles']:,} cycles, {point['area_transistors'] / 1e6:.1f} M transistors")
        pe = {B: pes[B].result() for B in block_sizes}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    points.sort(key=lambda p: (p["rows"] * p["cols"], p["rows"], p["block_size"], p["density_target"],
                               p["kept_bits_target"]))
    # Density and bits trade attention quality for speed, so the fronts are drawn at a fixed density (the
    # hardware choice: array, block size, bits), and over latency, area and error together.
    for density in densities:
        group = [p for p in points if p["density_target"] == density]
        front = pareto_front([(p["latency_us"], p["area_transistors"]) for p in group])
        for i, p in enumerate(group):
            p["pareto_at_density"] = i in front
    front = pareto_front([(p["latency_us"], p["area_transistors"], p["rel_l1"]) for p in points])
    for i, p in enumerate(points):
        p["pareto_latency_area_error"] = i in front
    result = {
        "benchmark": "sweep", **provenance(), "workload": workload, "heads": w.heads, "tokens": tokens,
        "config": {"arrays": [f"{r}x{c}" for r, c in arrays], "block_sizes": block_sizes, "densities": densities,
                   "kept_bits": kept_bits, "kv_cache_blocks": kv_cache_blocks, "frequency_ghz": frequency_ghz,
                   "read_latency": read_latency, "head_dim": w.head_dim},
        "dask": {"scheduler": scheduler or "local", "workers": workers},
        "pe": {str(B): v for B, v in pe.items()}, "points": points,
        "pareto_at_density": {str(d): [_name(p) for p in points if p["density_target"] == d and p["pareto_at_density"]]
                              for d in densities},
        "pareto_latency_area_error": [_name(points[i]) for i in front],
        "units": {"latency_us": "one engine running the layer (all heads, one start) / frequency",
                  "area_transistors": f"R x C x the PE's Yosys CMOS estimate + {SRAM_TRANSISTORS_PER_BIT} x buffer "
                                      "bits (control and per-column datapath left out)",
                  "cosine": "the plan's attention output vs fp64 (calibration data)"},
        "seconds": round(time.monotonic() - start, 1),
    }
    if report:
        write_result(report, result, _plot)
    return result


def _name(p):
    return f"{p['rows']}x{p['cols']} B{p['block_size']} d{p['density_target']} {p['kept_bits_target']}b"


def _plot(result, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    points = result["points"]
    colors = {d: plt.cm.viridis(i / max(1, len(result["config"]["densities"]) - 1))
              for i, d in enumerate(result["config"]["densities"])}
    markers = dict(zip(result["config"]["arrays"], "osD^vP*X"))
    for p in points:
        ax.scatter(p["area_transistors"] / 1e6, p["latency_us"], color=colors[p["density_target"]],
                   marker=markers[f"{p['rows']}x{p['cols']}"], s=18 + 10 * (p["block_size"] // 32),
                   edgecolors="black" if p["pareto_at_density"] else "none", linewidths=0.8, alpha=0.85)
    for d, color in colors.items():
        front = sorted((p for p in points if p["density_target"] == d and p["pareto_at_density"]),
                       key=lambda p: p["area_transistors"])
        ax.plot([p["area_transistors"] / 1e6 for p in front], [p["latency_us"] for p in front], "--", color=color,
                lw=0.9)
        for p in front:
            ax.annotate(f"{p['rows']}x{p['cols']} B{p['block_size']} {p['kept_bits_target']:g}b",
                        (p["area_transistors"] / 1e6, p["latency_us"]), fontsize=5.5, xytext=(3, 3),
                        textcoords="offset points")
    for d, color in colors.items():
        rel = np.mean([p["rel_l1"] for p in points if p["density_target"] == d])
        ax.scatter([], [], color=color, label=f"density {d} (rel L1 {rel:.3f}); dashed: its Pareto front")
    for name, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("estimated area (M transistors: PEs + 6T per buffer bit)")
    ax.set_ylabel(f"layer latency (us at {result['config']['frequency_ghz']} GHz)")
    ax.set_title(f"paro sweep: {result['workload']} workload ({result['heads']} heads x {result['tokens']} tokens), "
                 f"{len(points)} points", fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    _save(fig, path, plt)
