"""The cycle model's validation bench: random design points, each run on the engine RTL (Verilator, fast mode,
every output code checked against the golden model) and through the cycle model (:mod:`paro.sw.cycles`), with
the error per point and per head.

A design point draws the array (rows, cols), block size, head dimension, AXI data width, K/V cache slots, PE
pipeline stages, the K cuts of 4- and 2-bit blocks, the bitmaps (random or clustered near the diagonal, as reordered plans are), their density and share of 4-bit
blocks, heads per start and the memory's read latency; random Q/K/V give the golden codes.
"""

import dataclasses
import time
from pathlib import Path

import numpy as np

from ..config import MAX_PE_STAGES, AcceleratorConfig
from ..errors import ParoError
from ..sw.contract import check_engine_config
from ..sw.cycles import Memory, layer_cycles
from ..sw.program import random_layer
from .bench import _pyplot, _save, write_result
from .provenance import progress, provenance
from .simulate import ideal_cycles, run_layers

__all__ = ["design_point", "point_bitmaps", "validate_point", "bench_model_validation", "POINT_IDEAL_LIMIT"]

#: Design points are shrunk (fewer blocks) until their ideal cycles are at most this: seconds on the fast mode.
POINT_IDEAL_LIMIT = 1_500_000
MAX_SEQ_LEN = 1024


def design_point(rng):
    """One random design point the engine can be built for (a dict; ``config`` an :class:`AcceleratorConfig`)."""
    while True:
        rows, cols = (int(x) for x in rng.choice([2, 4, 8, 16], 2))
        block_size, head_dim = (int(x) for x in rng.choice([16, 32, 64], 2))
        if head_dim % rows or block_size % rows or block_size % (2 * cols):
            continue
        widths = [w for w in (32, 64, 128, 256, 512) if 16 * rows <= w <= 8 * head_dim]
        if not widths:
            continue
        n_blocks = int(rng.integers(3, 11))
        # half the builds that can (block_size a multiple of 4 x cols) also run 2-bit blocks
        two_bit = block_size % (4 * cols) == 0 and bool(rng.random() < 0.5)
        config = AcceleratorConfig(rows=rows, cols=cols, block_size=block_size, head_dim=head_dim,
                                   max_seq_len=MAX_SEQ_LEN, axi_data_bits=int(rng.choice(widths)),
                                   kv_cache_blocks=int(rng.integers(1, n_blocks + 2)),
                                   bitwidths=(0, 2, 4, 8) if two_bit else (0, 4, 8),
                                   pe_stages=int(rng.integers(0, MAX_PE_STAGES + 1)))
        check_engine_config(config)
        point = {"config": config, "n_blocks": n_blocks, "heads": int(rng.integers(1, 3)),
                 "density": round(float(rng.uniform(0.15, 1.0)), 3), "four_bit_share": round(float(rng.random()), 3),
                 "two_bit_share": round(float(rng.random()), 3) if two_bit else 0.0,
                 "clustered": bool(rng.random() < 0.5), "read_latency": int(rng.choice([0, 2, 8, 20, 40])),
                 "seed": int(rng.integers(1 << 30))}
        while point["n_blocks"] > 2 and _ideal(point) > POINT_IDEAL_LIMIT:
            point["n_blocks"] -= 1
        # half the builds cut 4-bit K, and half of those with 2-bit blocks 2-bit K, at the leading zero: drawn
        # from the point's own seed, so the draws above (and so every earlier design point) do not move
        cuts = np.random.default_rng([point["seed"], 1]).random(2) < 0.5
        point["config"] = dataclasses.replace(config, k4_cut="leading-zero" if cuts[0] else "round",
                                              k2_cut="leading-zero" if cuts[1] and two_bit else "block")
        return point


def _ideal(point):
    return sum(ideal_cycles(point["config"], b) for b in point_bitmaps(point))


def point_bitmaps(point):
    """The design point's bitmaps: each row keeps about ``density`` of its blocks (at least one), a
    ``four_bit_share`` of them at 4 bits, then a ``two_bit_share`` (if any) at 2 bits; clustered bitmaps keep the
    blocks nearest the diagonal."""
    rng = np.random.default_rng(point["seed"])
    nb = point["n_blocks"]
    bitmaps = []
    for _ in range(point["heads"]):
        if point["clustered"]:
            distance = np.abs(np.arange(nb)[:, None] - np.arange(nb)[None, :]) + rng.random((nb, nb))
            keep = distance <= np.quantile(distance, point["density"], axis=1, keepdims=True)
        else:
            keep = rng.random((nb, nb)) < point["density"]
            keep[np.arange(nb), rng.integers(0, nb, nb)] = True
        bitmap = np.where(rng.random((nb, nb)) < point["four_bit_share"], 4, 8).astype(np.uint8)
        if point.get("two_bit_share"):
            bitmap = np.where(rng.random((nb, nb)) < point["two_bit_share"], 2, bitmap).astype(np.uint8)
        bitmaps.append(np.where(keep, bitmap, 0).astype(np.uint8))
    return bitmaps


def validate_point(point, build_dir=None):
    """Run one design point on Verilator (fast mode, bit-exact) and through the model; return its record."""
    config, latency = point["config"], point["read_latency"]
    bitmaps = point_bitmaps(point)
    layer = random_layer(config, bitmaps, point["seed"])
    start = time.monotonic()
    [(totals, counters)] = run_layers(config, [layer], "verilator", gap=0, tag="model", build_dir=build_dir,
                                      read_latency=latency, fast=True)
    rtl_seconds = time.monotonic() - start
    start = time.monotonic()
    modelled, heads = layer_cycles(config, bitmaps, memory=Memory(read_latency=latency))
    model_seconds = time.monotonic() - start
    record = {key: value for key, value in point.items() if key != "config"}
    record.update({
        "config": config.to_dict(), "bit_exact": True,
        "kept_blocks": int(sum(np.count_nonzero(b) for b in bitmaps)),
        "ideal_cycles": sum(ideal_cycles(config, b) for b in bitmaps),
        "rtl_cycles": totals["CYCLES"], "model_cycles": modelled["cycles"],
        "error": (modelled["cycles"] - totals["CYCLES"]) / totals["CYCLES"],
        "rtl_bytes_read": totals["BYTES_READ"], "model_bytes_read": modelled["bytes_read"],
        "per_head": [{"rtl_cycles": c["CYCLES"], "model_cycles": h.cycles,
                      "error": (h.cycles - c["CYCLES"]) / c["CYCLES"]} for c, h in zip(counters, heads)],
        "rtl_seconds": round(rtl_seconds, 2), "model_seconds": round(model_seconds, 4)})
    return record


def bench_model_validation(output, points=24, seed=20261128, build_dir=None):
    """Validate the cycle model on ``points`` random design points; write ``output`` (JSON) and a PNG beside it."""
    if points < 1:
        raise ParoError(f"--points must be >= 1, got {points}")
    output = Path(output)
    rng = np.random.default_rng(seed)
    records = []
    for n in range(points):
        point = design_point(rng)
        c = point["config"]
        progress(f"model validation {n + 1}/{points}: {c.rows}x{c.cols}, B {c.block_size}, d {c.head_dim}, "
                 f"{point['n_blocks']} blocks x {point['heads']} head(s), cache {c.kv_cache_blocks}, "
                 f"latency {point['read_latency']}")
        records.append(validate_point(point, build_dir))
        progress(f"  RTL {records[-1]['rtl_cycles']:,} cycles, model {records[-1]['model_cycles']:,} "
                 f"({records[-1]['error']:+.3%})")
    errors = np.abs([r["error"] for r in records])
    head_errors = np.abs([h["error"] for r in records for h in r["per_head"]])
    result = {
        "benchmark": "model_validation", **provenance(), "seed": seed, "points": points,
        "config": "per record (random design points)",
        "summary": {"max_abs_error": float(errors.max()), "mean_abs_error": float(errors.mean()),
                    "max_abs_head_error": float(head_errors.max()),
                    "exact_points": int(sum(r["rtl_cycles"] == r["model_cycles"] for r in records)),
                    "bytes_read_equal": all(r["rtl_bytes_read"] == r["model_bytes_read"] for r in records)},
        "simulator": "verilator (fast mode)",
        "units": {"rtl_cycles": "engine CYCLES counter of the start (Verilator, bit-exact against the golden model)",
                  "model_cycles": "the cycle model's cycles for the same start (paro.sw.cycles)",
                  "error": "(model - rtl) / rtl", "read_latency": "memory cycles before each read burst's data"},
        "records": records,
    }
    return write_result(output, result, _plot)


def _plot(result, path):
    plt = _pyplot()
    records = result["records"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(range(len(records)), [100 * r["error"] for r in records], color="#2a7ab9")
    for bound in (-3, 3):
        left.axhline(bound, color="#c0392b", linestyle="--", linewidth=0.8)
    left.set_xlabel("design point")
    left.set_ylabel("model error, % of RTL cycles")
    left.set_ylim(-4, 4)
    left.set_title(f"max |error| {100 * result['summary']['max_abs_error']:.3f}%, "
                   f"mean {100 * result['summary']['mean_abs_error']:.3f}%", fontsize=9)
    right.loglog([r["rtl_cycles"] for r in records], [r["model_cycles"] for r in records], "o", color="#2a7ab9")
    lo = min(r["rtl_cycles"] for r in records)
    hi = max(r["rtl_cycles"] for r in records)
    right.plot([lo, hi], [lo, hi], color="#888888", linewidth=0.8)
    right.set_xlabel("RTL cycles (Verilator)")
    right.set_ylabel("model cycles")
    right.set_title(f"{len(records)} random design points", fontsize=9)
    fig.suptitle(f"paro cycle model vs RTL ({result['commit'][:12]})", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)
