"""``paro project``: a CogVideoX layer's attention on engines built by paro, from the cycle model
(:mod:`paro.sw.cycles`), next to measured GPU runs.

Configuration: engines of ``rows x cols`` PEs at ``frequency_ghz``, as many as make the dense INT8 peak (2 ops
per MAC, one MAC per PE per cycle) equal ``peak_tops``; each engine has ``kv_cache_blocks`` K/V cache slots
and a score buffer for the plan's longest row (``max_kept_keys``); its AXI port moves one ``8 x head_dim``-bit
beat a cycle. They share one memory of ``bandwidth_tbs``:

* ``sharing="equal"``: each engine gets ``1/engines`` of it at all times (a static split; the pessimistic
  bound, since an engine that is not fetching leaves its share idle).
* ``sharing="demand"`` (default): an engine that is fetching shares the memory with the others fetching at
  the same time. Mean-field estimate: engine ``e`` fetches a fraction ``f_e = bytes_e / (b x T)`` of the
  layer's ``T`` cycles at rate ``b``; the others fetching at a moment are Poisson with mean ``sum f``, and
  ``b = E[min(port, bandwidth / (1 + others))]``, iterated to a fixed point (a few model runs). The engines
  all start together, so their first query blocks' reads come at once: the layer is charged
  ``startup_cycles``, the time the memory needs for all of them beyond what the model gave the slowest.

Work split: the layer's query blocks (head by head) are cut into ``engines`` contiguous pieces of equal
modelled cost (per query block the cycles it takes in a whole-head run of the model at the same memory
rate), each piece one start of one or two descriptors (``ROW_FIRST``/``ROW_COUNT``), so an engine's cache
serves neighbouring query rows. The layer takes as long as the slowest engine (modelled piece by piece).

Plan: ``plan_path`` (a plan for the model's token count), else the built-in ``cogvideox`` workload calibrated
at ``density`` and ``kept_bits`` for ``calibrate_heads`` heads; the layer's heads take those bitmaps in turn.

GPU references (one H100 80GB, bf16, torch 2.11, the 48-head x 17,776-token x d64 layer): dense cuDNN SDPA
9.06 ms; ``flex_attention`` with 128-token blocks at densities 0.206 / 0.255 / 0.305 / 0.503: 2.57 / 3.13 /
3.72 / 5.99 ms (interpolated at the plan's density). For the 30-head CogVideoX-2B layer they are scaled by
30/48 (same tokens, fewer heads: an estimate, stated in the report). End to end: attention is
``attention_share`` of a denoising step's GPU time; per layer the rest is ``dense x (1 - share) / share``,
held at the GPU's time while the accelerator replaces the attention.
"""

import dataclasses
import math
import time

import numpy as np

from ..config import AcceleratorConfig
from ..errors import ParoError
from ..sw.calibrate import calibrate
from ..sw.contract import engine_buffers
from ..sw.cycles import BREAKDOWN, Memory, layer_cycles
from ..sw.plan import load_plan
from ..sw.workloads import make_workload
from .bench import _pyplot, _save, write_result
from .provenance import progress, provenance
from .simulate import ideal_cycles

__all__ = ["project", "engine_for", "split_rows", "MODELS", "GPU_REFERENCE", "SHARING"]

#: Attention layers of the models: heads, tokens (video + text), head dimension.
MODELS = {"cogvideox-5b": {"heads": 48, "tokens": 17776, "head_dim": 64},
          "cogvideox-2b": {"heads": 30, "tokens": 17776, "head_dim": 64}}

#: Measured on one H100 80GB (bf16, torch 2.11) for the 48-head x 17,776-token x d64 layer, in ms.
GPU_REFERENCE = {"device": "NVIDIA H100 80GB, bf16, torch 2.11", "heads": 48, "dense_sdpa_ms": 9.06,
                 "flex_attention_128_ms": {0.206: 2.57, 0.255: 3.13, 0.305: 3.72, 0.503: 5.99}}

SHARING = ("demand", "equal")


def engine_for(config, bitmaps, rows, cols, kv_cache_blocks, **changes):
    """The engine a plan's ``bitmaps`` (heads x nq x nk) run on at ``rows x cols``: a score buffer for their
    longest row, ``kv_cache_blocks`` cache slots (at most one per block), a token row per AXI beat."""
    longest = int((np.asarray(bitmaps) > 0).sum(axis=-1).max())
    return dataclasses.replace(config, rows=rows, cols=cols, max_kept_keys=longest * config.block_size,
                               kv_cache_blocks=min(kv_cache_blocks, config.max_blocks),
                               axi_data_bits=8 * config.head_dim, **changes)


def split_rows(costs, engines):
    """Cut the layer's query blocks (``costs``: per head an array of per-block costs) into at most ``engines``
    contiguous pieces of about equal cost; per piece its tasks ``[(head, range of query blocks)]``."""
    flat = np.concatenate(costs).astype(float)
    owner = np.concatenate([np.full(len(c), h) for h, c in enumerate(costs)])
    local = np.concatenate([np.arange(len(c)) for c in costs])
    cum = np.cumsum(flat)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, engines) / engines, side="left") + 1
    edges = np.unique(np.clip(np.concatenate([[0], cuts, [len(flat)]]), 0, len(flat)))
    pieces = []
    for a, b in zip(edges[:-1], edges[1:]):
        tasks = []
        for h in np.unique(owner[a:b]):
            mine = np.flatnonzero(owner[a:b] == h) + a
            tasks.append((int(h), range(int(local[mine[0]]), int(local[mine[-1]]) + 1)))
        pieces.append(tasks)
    return pieces


def _plan(model, plan_path, density, kept_bits, calibrate_heads, layer, step):
    spec = MODELS[model]
    if plan_path:
        plan = load_plan(plan_path, layer, step)
        tokens = plan.bitmap.shape[1] * plan.config.block_size
        if plan.config.head_dim != spec["head_dim"] or not spec["tokens"] <= tokens < spec["tokens"] + \
                plan.config.block_size:
            raise ParoError(f"plan {plan_path} is for {plan.bitmap.shape[1]} blocks of {plan.config.block_size} "
                            f"tokens, d {plan.config.head_dim}; {model} needs {spec['tokens']} tokens, d "
                            f"{spec['head_dim']}: calibrate one for the cogvideox workload, or leave out --plan")
        return plan, {"plan": str(plan_path)}
    workload = make_workload("cogvideox", heads=calibrate_heads)
    config = AcceleratorConfig(block_size=64, head_dim=spec["head_dim"], max_seq_len=32768)
    progress(f"calibrating {calibrate_heads} head(s) of the cogvideox workload at density {density}, "
             f"{kept_bits} bits per kept block (about a minute a head)")
    plan, _ = calibrate(workload, config, density=density, avg_bits=density * kept_bits, log=progress)
    return plan, {"calibrated": {"workload": "cogvideox", "heads": calibrate_heads, "density": density,
                                 "kept_bits": kept_bits}}


def _check(model, rows, cols, frequency_ghz, peak_tops, bandwidth_tbs, sharing, read_latency, kv_cache_blocks,
           attention_share, density, kept_bits, calibrate_heads):
    if model not in MODELS:
        raise ParoError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if sharing not in SHARING:
        raise ParoError(f"unknown --sharing {sharing!r}; choose one of {', '.join(SHARING)}")
    for name, value in (("--frequency-ghz", frequency_ghz), ("--peak-tops", peak_tops),
                        ("--bandwidth-tbs", bandwidth_tbs), ("--kept-bits", kept_bits)):
        if not value > 0:
            raise ParoError(f"{name} must be > 0, got {value}")
    for name, value in (("--rows", rows), ("--cols", cols), ("--kv-cache-blocks", kv_cache_blocks),
                        ("--calibrate-heads", calibrate_heads)):
        if value < 1:
            raise ParoError(f"{name} must be >= 1, got {value}")
    if read_latency < 0:
        raise ParoError(f"--read-latency must be >= 0 cycles, got {read_latency}")
    if not 0 < attention_share < 1:
        raise ParoError(f"--attention-share must be in (0, 1), got {attention_share}")
    if not 0 < density <= 1:
        raise ParoError(f"--density must be in (0, 1], got {density}")
    if not 4 <= kept_bits <= 8:
        raise ParoError(f"--kept-bits must be in [4, 8] (the engine's kept blocks are 4 or 8 bits), got {kept_bits}")


def _model_pieces(config, bitmaps, memory, engines):
    """Split the layer by modelled cost and model every piece; return per piece ``(totals, heads)``."""
    distinct = {}
    for bitmap in bitmaps:
        key = bitmap.tobytes()
        if key not in distinct:
            _, (head,) = layer_cycles(config, [bitmap], memory=memory)
            distinct[key] = np.array(head.row_cycles)
    pieces = split_rows([distinct[b.tobytes()] for b in bitmaps], engines)
    runs = []
    for n, tasks in enumerate(pieces):
        runs.append(layer_cycles(config, [bitmaps[h] for h, _ in tasks], rows=[r for _, r in tasks],
                                 memory=memory))
        if (n + 1) % max(1, len(pieces) // 4) == 0:
            progress(f"  {n + 1}/{len(pieces)} engines modelled")
    return pieces, runs


def _demand_rate(runs, rate, port, total):
    """One step of the demand-sharing fixed point: the rate an engine fetching gets, given every engine's bytes
    at ``rate`` over the layer's cycles."""
    from scipy.stats import poisson                       # (scipy.stats takes a second to import)
    layer = max(t["cycles"] for t, _ in runs)
    others = sum(min(1.0, t["bytes_read"] / rate / layer) for t, _ in runs)
    k = np.arange(int(others + 12 * math.sqrt(others + 1) + 20))
    return float(np.sum(poisson.pmf(k, others) * np.minimum(port, total / (1 + k)))), others


def project(model="cogvideox-5b", plan_path=None, density=0.25, kept_bits=6.0, calibrate_heads=2, rows=16,
            cols=16, frequency_ghz=2.0, peak_tops=430.0, bandwidth_tbs=3.35, sharing="demand", read_latency=0,
            kv_cache_blocks=128, attention_share=0.75, report=None, layer=None, step=None):
    """Project one attention layer of ``model``; write ``report`` (JSON) and a PNG beside it; return the dict."""
    _check(model, rows, cols, frequency_ghz, peak_tops, bandwidth_tbs, sharing, read_latency, kv_cache_blocks,
           attention_share, density, kept_bits, calibrate_heads)
    start = time.monotonic()
    spec = MODELS[model]
    plan, source = _plan(model, plan_path, density, kept_bits, calibrate_heads, layer, step)
    B = plan.config.block_size
    try:
        config = engine_for(plan.config, plan.bitmap, rows, cols, kv_cache_blocks)
    except ParoError as error:
        raise ParoError(f"the projected engine cannot be built: {error}") from None
    engines = max(1, round(peak_tops * 1e12 / (2 * rows * cols * frequency_ghz * 1e9)))
    total = bandwidth_tbs * 1e12 / (frequency_ghz * 1e9)           # bytes per cycle, all engines
    port = config.axi_data_bits / 8
    bitmaps = [np.asarray(plan.bitmap[h % plan.heads]) for h in range(spec["heads"])]
    progress(f"cycle model: {spec['heads']} heads x {plan.bitmap.shape[1]} query blocks on {engines} engines "
             f"({rows}x{cols} at {frequency_ghz} GHz), {bandwidth_tbs} TB/s shared ({sharing})")
    rate, fetching, history = (min(port, total / engines) if sharing == "equal" else port), None, []
    for _ in range(1 if sharing == "equal" else 8):
        pieces, runs = _model_pieces(config, bitmaps, Memory(read_latency, rate), engines)
        history.append({"bytes_per_cycle": rate, "layer_cycles": max(t["cycles"] for t, _ in runs)})
        if sharing == "equal":
            break
        new, fetching = _demand_rate(runs, rate, port, total)
        history[-1]["engines_fetching"] = fetching
        progress(f"  memory rate {rate:.2f} B/cycle -> {history[-1]['layer_cycles']} cycles; "
                 f"{fetching:.1f} engines fetching at a time -> {new:.2f} B/cycle")
        if abs(new - rate) <= 0.02 * rate:
            break
        rate = math.sqrt(rate * new)
    startup = 0
    if sharing == "demand":       # every engine's first query block (its K and V, Q, bitmap row) at once
        first = [sum(2 * B * plan.config.head_dim * np.count_nonzero(bitmaps[h][r.start]) for h, r in tasks[:1])
                 + B * plan.config.head_dim for tasks in pieces]
        startup = max(0, math.ceil(sum(first) / total - max(first) / rate))
    cycles = max(t["cycles"] for t, _ in runs) + startup
    breakdown = {k: sum(h.breakdown[k] for _, heads in runs for h in heads) for k in BREAKDOWN}
    bytes_read = sum(t["bytes_read"] for t, _ in runs)
    bytes_written = sum(t["bytes_written"] for t, _ in runs)
    ideal = sum(ideal_cycles(config, b) for b in bitmaps)
    hz = frequency_ghz * 1e9
    layer_ms, ideal_ms = cycles / hz * 1e3, ideal / engines / hz * 1e3
    mean_ms = float(np.mean([t["cycles"] for t, _ in runs])) / hz * 1e3
    traffic_ms = (bytes_read + bytes_written) / (bandwidth_tbs * 1e12) * 1e3
    kept = float(np.mean([np.count_nonzero(b) / b.size for b in bitmaps]))
    scale = spec["heads"] / GPU_REFERENCE["heads"]
    flex = GPU_REFERENCE["flex_attention_128_ms"]
    gpu_dense = GPU_REFERENCE["dense_sdpa_ms"] * scale
    gpu_sparse = float(np.interp(kept, list(flex), list(flex.values()))) * scale
    other = gpu_dense / attention_share * (1 - attention_share)
    # The layer beyond the ideal, in ms: each breakdown category per engine on average, the slowest engine's
    # excess over the mean, the start-up burst; they add up to layer_ms - ideal_ms.
    losses = {k: v / len(runs) / hz * 1e3 for k, v in breakdown.items() if k != "compute"}
    losses["idle_engines"] = (ideal / engines - ideal / len(runs)) / hz * 1e3 if len(runs) < engines else 0.0
    losses["imbalance"] = (max(t["cycles"] for t, _ in runs) / hz * 1e3 - mean_ms)
    losses["startup_burst"] = startup / hz * 1e3
    losses["layer_overhead"] = mean_ms - sum(breakdown.values()) / len(runs) / hz * 1e3
    buffers = engine_buffers(config)
    engine_bits = sum(b["bits"] for b in buffers.values())
    result = {
        "benchmark": "projection", **provenance(), "model": model, **spec, "source": source,
        "config": config.to_dict(), "plan_heads": plan.heads, "plan_heads_reused": plan.heads < spec["heads"],
        "engines": engines, "engines_used": len(runs), "pes": engines * rows * cols, "frequency_ghz": frequency_ghz,
        "dense_int8_peak_tops": 2 * rows * cols * hz * engines / 1e12,
        "memory": {"bandwidth_tbs": bandwidth_tbs, "bytes_per_cycle_total": total, "port_bytes_per_cycle": port,
                   "read_latency_cycles": read_latency, "sharing": sharing,
                   "engine_bytes_per_cycle": rate, "engines_fetching_at_a_time": fetching, "iterations": history},
        "density": kept, "kept_bits": float(np.mean([b[b > 0].mean() for b in bitmaps])),
        "layer_cycles": cycles, "startup_cycles": startup, "layer_ms": layer_ms, "mean_engine_ms": mean_ms, "ideal_ms": ideal_ms,
        "utilization": ideal_ms / layer_ms, "bytes_read": bytes_read, "bytes_written": bytes_written,
        "traffic_ms_at_full_bandwidth": traffic_ms, "bound": "memory" if traffic_ms >= ideal_ms else "compute",
        "losses_ms": losses, "breakdown": breakdown, "breakdown_share": {k: v / sum(breakdown.values()) for k, v in breakdown.items()},
        "on_chip": {"bits_per_engine": engine_bits, "megabytes_total": engine_bits * engines / 8 / 2**20,
                    "buffers_per_engine": {k: v["bits"] for k, v in buffers.items()}},
        "gpu": {"device": GPU_REFERENCE["device"], "dense_sdpa_48_heads_ms": GPU_REFERENCE["dense_sdpa_ms"],
                "flex_attention_128_48_heads_ms": {str(k): v for k, v in flex.items()},
                "scaled_to_heads": scale, "dense_ms": gpu_dense, "block_sparse_ms_at_density": gpu_sparse},
        "speedup_vs_gpu_dense": gpu_dense / layer_ms, "speedup_vs_gpu_block_sparse": gpu_sparse / layer_ms,
        "end_to_end": {"attention_share_of_gpu_step": attention_share, "other_ms_per_layer": other,
                       "method": "non-attention time per layer = GPU dense attention x (1 - share) / share, held "
                                 "at the GPU's time; the accelerator replaces the attention",
                       "speedup_vs_gpu_dense": (gpu_dense + other) / (layer_ms + other),
                       "speedup_vs_gpu_block_sparse": (gpu_sparse + other) / (layer_ms + other)},
        "units": {"layer_ms": "the slowest engine's start (cycle model) + startup_cycles, / frequency",
                  "ideal_ms": "kept-block MACs / (engines x R x C x products per PE per cycle) / frequency",
                  "traffic_ms_at_full_bandwidth": "bytes read and written by all engines / bandwidth",
                  "breakdown": "cycles summed over engines and heads",
                  "losses_ms": "layer_ms - ideal_ms by cause: breakdown categories per engine on average, "
                               "idle engines, the slowest engine's excess over the mean, the start-up burst, and "
                               "each start's descriptor checks (layer_overhead)", "on_chip": "bits of every engine buffer"},
        "seconds": round(time.monotonic() - start, 1),
    }
    if report:
        write_result(report, result, _plot)
    return result


def _plot(result, path):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.2, 1]})
    names = ["GPU dense SDPA", f"GPU flex_attention\n(density {result['density']:.3f})", "paro (model)",
             "paro ideal"]
    values = [result["gpu"]["dense_ms"], result["gpu"]["block_sparse_ms_at_density"], result["layer_ms"],
              result["ideal_ms"]]
    bars = left.bar(names, values, color=["#888888", "#aaaaaa", "#2a7ab9", "#9cc3e4"])
    for bar, value in zip(bars, values):
        left.annotate(f"{value:.2f} ms", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                      fontsize=8)
    left.set_ylabel("attention layer latency (ms)")
    config = result["config"]
    left.set_title(f"{result['model']}: {result['engines']} engines {config['rows']}x{config['cols']} at "
                   f"{result['frequency_ghz']} GHz ({result['dense_int8_peak_tops']:.0f} TOPS), "
                   f"{result['memory']['bandwidth_tbs']} TB/s ({result['memory']['sharing']})", fontsize=8)
    left.tick_params(axis="x", labelsize=7)
    losses = {k: v for k, v in result["losses_ms"].items() if v > 0.0005}
    right.barh(list(losses), [1e3 * v for v in losses.values()], color="#2a7ab9")
    right.invert_yaxis()
    right.set_xlabel("microseconds of the layer")
    right.set_title(f"beyond the ideal: {1e3 * (result['layer_ms'] - result['ideal_ms']):.0f} us "
                    f"({result['bound']}-bound)", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)
