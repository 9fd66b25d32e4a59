"""``paro liveness``: every bitmap of a small engine runs to ``done``, bit-exact, in exactly the modelled cycles.

Bounded liveness by exhaustion rather than by a solver (the whole engine with its memories is beyond what
SymbiYosys closes here): for a 2 x 2 array, 16-token blocks, ``head_dim`` 16 and ``n_blocks`` query and key
blocks, it enumerates every bitmap the contract allows (each entry 0, 4 or 8; every query row keeps at least
one block: ``(3**n - 1)**n`` bitmaps, 17,576 for ``n = 3``), packs them into starts of ``heads_per_start``
heads over random Q/K/V, and runs them in the fast mode (Verilator) at each memory read latency. Every start
must reach ``done`` (the fast harness gives up after :func:`~paro.flows.simulate.cycle_limit` cycles), every
output code must equal the golden model's, and every head's ``CYCLES`` must equal the cycle model's
(:mod:`paro.sw.cycles`), which makes the model's count the bound. The report gives the bitmaps, heads, starts,
the largest head's cycles and any failure.
"""

import itertools
import json
import time

import numpy as np

from ..config import AcceleratorConfig
from ..errors import ParoError
from ..files import atomic_write
from ..sw.cycles import Memory, layer_cycles
from ..sw.program import random_layer
from .provenance import progress, provenance
from .simulate import run_layers

__all__ = ["every_bitmap", "all_bitmaps", "LIVENESS_CONFIG"]

LIVENESS_CONFIG = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=64, kv_cache_blocks=2,
                                    max_kept_keys=64, max_heads=64)


def all_bitmaps(n_blocks):
    """Every legal ``n_blocks x n_blocks`` bitmap over {0, 4, 8} with a kept block in every row, in a fixed order."""
    rows = [row for row in itertools.product((0, 4, 8), repeat=n_blocks) if any(row)]
    for choice in itertools.product(rows, repeat=n_blocks):
        yield np.array(choice, dtype=np.uint8)


def every_bitmap(n_blocks=3, latencies=(0, 20), heads_per_start=64, seed=20261129, report=None, build_dir=None):
    """Run every bitmap of ``n_blocks`` blocks at every latency; write ``report``; return the dict."""
    if not 1 <= n_blocks <= LIVENESS_CONFIG.max_blocks:
        raise ParoError(f"--blocks must be in [1, {LIVENESS_CONFIG.max_blocks}], got {n_blocks}")
    if not 1 <= heads_per_start <= LIVENESS_CONFIG.max_heads:
        raise ParoError(f"--heads-per-start must be in [1, {LIVENESS_CONFIG.max_heads}], got {heads_per_start}")
    config = LIVENESS_CONFIG
    bitmaps = list(all_bitmaps(n_blocks))
    starts = [bitmaps[n:n + heads_per_start] for n in range(0, len(bitmaps), heads_per_start)]
    progress(f"liveness: {len(bitmaps):,} bitmaps of {n_blocks} x {n_blocks} blocks, {len(starts)} starts, "
             f"latencies {list(latencies)}")
    begin = time.monotonic()
    layers = [random_layer(config, group, seed + n) for n, group in enumerate(starts)]   # the same at every latency
    runs, failures = [], []
    for latency in latencies:
        worst, cycles, heads = 0, 0, 0
        for n, (group, layer) in enumerate(zip(starts, layers)):
            try:
                [(totals, per_head)] = run_layers(config, [layer], "verilator", tag="liveness", build_dir=build_dir,
                                                  read_latency=latency, fast=True, gap=0)
            except ParoError as error:
                failures.append({"latency": latency, "start": n, "error": str(error)})
                progress(f"  FAILED start {n} at latency {latency}: {error}")
                continue
            _, modelled = layer_cycles(config, group, memory=Memory(read_latency=latency))
            for h, (counters, model) in enumerate(zip(per_head, modelled)):
                if counters["CYCLES"] != model.cycles:
                    failures.append({"latency": latency, "start": n, "head": h, "rtl_cycles": counters["CYCLES"],
                                     "model_cycles": model.cycles, "bitmap": group[h].tolist()})
                worst = max(worst, counters["CYCLES"])
            cycles += totals["CYCLES"]
            heads += len(group)
            if n % 25 == 0 or n == len(starts) - 1:
                progress(f"  latency {latency}: {heads:,}/{len(bitmaps):,} heads, {len(failures)} failures")
        runs.append({"read_latency": latency, "heads": heads, "cycles": cycles, "largest_head_cycles": worst})
    result = {"benchmark": "liveness", **provenance(), "config": config.to_dict(), "n_blocks": n_blocks,
              "bitmaps": len(bitmaps), "starts": len(starts), "heads_per_start": heads_per_start, "seed": seed,
              "runs": runs, "failures": len(failures), "failure_details": failures[:50],
              "passed": not failures, "seconds": round(time.monotonic() - begin, 1),
              "units": {"cycles": "engine CYCLES counters (the whole start)",
                        "largest_head_cycles": "the longest head's CYCLES (= the cycle model's bound)"}}
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    if failures:
        raise ParoError(f"{len(failures)} liveness failure(s); see {report or 'the log'}")
    return result
