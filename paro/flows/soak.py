"""``paro soak``: a long random co-simulation of the engine against the golden model.

Until at least ``heads`` heads are checked, it draws a random design point (array, block size, head dimension,
bus width, K/V cache slots, read latency: :func:`paro.flows.validate.design_point`), builds the engine for it
on Verilator, and runs random layers of 1 to 4 heads (random Q/K/V, random bitmaps, random or clustered, of
random density and 4-bit share): several in the fast mode with the point's memory latency, one in the cocotb
bench with random pauses on every bus channel (back-pressure, ``gap``). Every output code is compared with
``sw/golden.py``, and bytes read with the golden fetcher. The report counts heads, layers, engine cycles and
bus beats checked, and lists every mismatch with its seed (the run goes on after one).
"""

import dataclasses
import json
import time

import numpy as np

from ..errors import ParoError
from ..files import atomic_write
from ..sw.program import random_layer
from .provenance import progress, provenance
from .simulate import ideal_cycles, run_layers
from .validate import design_point, point_bitmaps

__all__ = ["soak"]


#: A design point is shrunk (fewer blocks) until 4 dense-ish heads take at most this many ideal cycles, so a
#: fast-mode layer takes about a second and the cocotb layer (one head) a few.
SOAK_IDEAL_LIMIT = 150_000


def _layers(point, rng, count, most_heads=4):
    """``count`` random layers for a design point: bitmaps and their seeds."""
    layers = []
    for _ in range(count):
        draw = {**point, "heads": int(rng.integers(1, most_heads + 1)), "seed": int(rng.integers(1 << 30)),
                "density": round(float(rng.uniform(0.15, 1.0)), 3), "four_bit_share": round(float(rng.random()), 3),
                "clustered": bool(rng.random() < 0.5)}
        if 2 in point["config"].bitwidths:
            draw["two_bit_share"] = round(float(rng.random()), 3)
        bitmaps = point_bitmaps(draw)
        layers.append((draw["seed"], bitmaps, random_layer(point["config"], bitmaps, draw["seed"])))
    return layers


def _run(config, layers, build_dir, **mode):
    """Run layers; return (checked results, mismatch or None)."""
    try:
        return run_layers(config, [layer for _, _, layer in layers], "verilator", tag="soak", build_dir=build_dir,
                          **mode), None
    except ParoError as error:
        return [], str(error)


def soak(heads=200, seed=20261128, fast_layers=5, gap=0.2, report=None, build_dir=None):
    """Run the soak until ``heads`` heads are checked; write ``report``; return the dict."""
    if heads < 1 or fast_layers < 1 or not 0 < gap < 1:
        raise ParoError(f"--heads and --fast-layers must be >= 1 and --gap in (0, 1), got {heads}, {fast_layers}, "
                        f"{gap}")
    rng = np.random.default_rng(seed)
    start = time.monotonic()
    counts = {"heads": 0, "layers": 0, "cycles": 0, "read_beats": 0, "write_beats": 0, "design_points": 0}
    points, mismatches = [], []
    progress(f"soak: random design points until {heads} heads are checked (seed {seed})")
    while counts["heads"] < heads:
        point = design_point(rng)
        config = dataclasses.replace(point["config"], max_heads=4)
        point.update(config=config, heads=4, density=1.0)
        while point["n_blocks"] > 2 and sum(ideal_cycles(config, b) for b in point_bitmaps(point)) > SOAK_IDEAL_LIMIT:
            point["n_blocks"] -= 1
        beat = config.axi_data_bits // 8
        entry = {"config": config.to_dict(), "read_latency": point["read_latency"], "n_blocks": point["n_blocks"],
                 "heads": 0, "cycles": 0}
        for mode, layers in (({"fast": True, "gap": 0, "read_latency": point["read_latency"]},
                              _layers(point, rng, fast_layers)),
                             ({"fast": False, "gap": gap, "seed": int(rng.integers(1 << 30))}, _layers(point, rng, 1, most_heads=1))):
            results, failure = _run(config, layers, build_dir, **mode)
            if failure:
                mismatches.append({"config": config.to_dict(), "mode": "fast" if mode["fast"] else "cocotb",
                                   "layer_seeds": [s for s, _, _ in layers], "error": failure})
                progress(f"  MISMATCH: {failure}")
                continue
            for (totals, per_head), (_, bitmaps, _) in zip(results, layers):
                counts["heads"] += len(bitmaps)
                counts["layers"] += 1
                counts["cycles"] += totals["CYCLES"]
                counts["read_beats"] += totals["BYTES_READ"] // beat
                counts["write_beats"] += totals["BYTES_WRITTEN"] // beat
                entry["heads"] += len(bitmaps)
                entry["cycles"] += totals["CYCLES"]
        counts["design_points"] += 1
        points.append(entry)
        progress(f"  point {counts['design_points']}: {config.rows}x{config.cols}, B {config.block_size}, d "
                 f"{config.head_dim}, bus {config.axi_data_bits}, cache {config.kv_cache_blocks}, latency "
                 f"{point['read_latency']}: {counts['heads']}/{heads} heads, {counts['cycles']:,} cycles, "
                 f"{len(mismatches)} mismatches")
    result = {"benchmark": "soak", **provenance(), "seed": seed, "config": "per design point (random)",
              **counts, "mismatches": len(mismatches), "mismatch_details": mismatches,
              "modes": {"fast": f"{fast_layers} layers per point, the point's read latency, no pauses",
                        "cocotb": f"1 layer per point, random pauses (p {gap}) on every bus channel"},
              "units": {"cycles": "engine CYCLES counters of every start", "read_beats": "AXI read data beats",
                        "write_beats": "AXI write data beats"},
              "points": points, "seconds": round(time.monotonic() - start, 1)}
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    if mismatches:
        raise ParoError(f"{len(mismatches)} soak run(s) differed from the golden model; see {report or 'the log'}")
    return result
