"""``paro calibrate``: choose each head's token order, block mask and block bitwidths; measure the accuracy.

Per head, three passes over the attention rows, one query block at a time (memory ``O(B x tokens)``):

1. **Order.** Attention mass per block for all six orders (:func:`sw.sparsity.block_masses`). The metric:
   the fraction of the attention mass that the kept blocks capture at the evaluation density (``--density``,
   or 0.25 when only ``--avg-bits`` is given). The order with the largest captured mass wins; ties (within
   1e-9) keep the identity order (FHW), else the first in ``PERMUTATIONS``.
2. **Errors.** In the chosen order (and in the identity order, for comparison) the per-block errors the bit
   allocation minimises: ``e0`` (block mass), ``e2``, ``e4`` and ``e8`` (L1 of the attention probabilities
   when the block's P is computed at 2 bits with K reduced to 2 bits, at 4 bits with K reduced to 4 bits, or
   at 8 bits; ``e2`` only for a configuration with 2-bit blocks) - see :mod:`sw.quant`.
   Bitwidths are then allocated jointly for all heads of the layer (:mod:`sw.allocation`: integer
   programming by default, the Lagrangian as the fast option; the report gives both objectives).
3. **Accuracy.** The bit-exact golden model's output (:func:`sw.golden.attention_head`), dequantised and
   un-permuted, against fp64 dense attention: ``cosine`` and ``rel_l1``; the same kept blocks at full
   precision (``cosine_fp_mask``) separate the sparsity loss from the quantisation loss; the identity order
   at the same budgets gives ``cosine_identity`` / ``rel_l1_identity``.
4. **Held-out** (optional): the same measurement on Q/K/V the plan was not calibrated on (another sample or
   step), with the plan's orders and bitmaps (:func:`held_out_quality`).
"""

import sys
import time

import numpy as np

from paro.config import AcceleratorConfig
from paro.errors import ParoError

from . import golden
from .contract import check_kept_keys
from .plan import BlockPlan
from .allocation import allocate
from .quant import quantize_head
from .reorder import PERMUTATIONS, permutation_indices, permute_tokens
from .sparsity import attention_rows, block_masses, captured_mass

__all__ = ["calibrate", "held_out_quality", "block_errors", "fitting_seq_len", "Progress", "REORDER_PAYS_GAIN",
           "ERROR_METRICS"]

IDENTITY = "FHW"
#: A head's pattern "runs across the identity order's contiguous axis" when the best order captures at
#: least this much more attention mass than the identity order at the evaluation density.
REORDER_PAYS_GAIN = 0.10


def fitting_seq_len(layout, block_size):
    """The smallest ``max_seq_len`` (a power of two, at least 64) that holds ``layout``'s tokens padded to
    ``block_size``: the softmax widths follow the sequence length, so a plan fits the smallest engine that
    runs it."""
    return max(64, 1 << (layout.padded(block_size) - 1).bit_length())


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per 10% otherwise."""

    def __init__(self, total, label, stream=None):
        self.total, self.label, self.done = max(1, total), label, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.last_decile = -1

    def __call__(self, amount=1):
        self.done = min(self.total, self.done + amount)
        fraction = self.done / self.total
        elapsed = time.monotonic() - self.start
        eta = elapsed / fraction - elapsed if fraction > 0 else 0
        bar = "#" * int(30 * fraction)
        text = f"[paro] {self.label} [{bar:<30}] {100 * fraction:5.1f}% {elapsed:6.0f}s elapsed, ~{eta:.0f}s left"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if self.done == self.total else ""))
            self.stream.flush()
        elif int(10 * fraction) > self.last_decile:
            self.last_decile = int(10 * fraction)
            self.stream.write(text + "\n")
            self.stream.flush()


class _Metrics:
    """Running sums for cosine similarity and relative L1 over many heads (memory: O(1))."""

    def __init__(self):
        self.dot = self.aa = self.bb = self.diff = self.ref = 0.0

    def add(self, out, ref):
        a, b = out.ravel().astype(np.float64), ref.ravel().astype(np.float64)
        self.dot += float(a @ b)
        self.aa += float(a @ a)
        self.bb += float(b @ b)
        self.diff += float(np.abs(a - b).sum())
        self.ref += float(np.abs(b).sum())
        return self

    def result(self):
        cosine = self.dot / (np.sqrt(self.aa) * np.sqrt(self.bb) + 1e-300)
        return float(cosine), float(self.diff / (self.ref + 1e-300))


def _metrics(out, ref):
    return _Metrics().add(out, ref).result()


def _block_sum(x, block_size):
    """Sum a (B, tokens_padded) matrix over key blocks -> (B, nk)."""
    return x.reshape(x.shape[0], -1, block_size).sum(axis=2)


def _p_round(pt, levels, block_size):
    """Float model of :func:`sw.golden.p_quantize`: per (row, block) leading-zero scale, then ``levels``."""
    blocks = pt.reshape(pt.shape[0], -1, block_size)
    peak = blocks.max(axis=2, keepdims=True)
    scale = 2.0 ** np.clip(np.floor(-np.log2(np.maximum(peak, 1e-30))), 0, golden.P_SHIFT_MAX)
    return (np.rint(blocks * scale * levels) / (scale * levels)).reshape(pt.shape)


#: The per-block error the bit allocation minimises: ``probability`` (L1 of the attention probabilities) or
#: ``output`` (L1 of the attention output the block's error causes).
ERROR_METRICS = ("probability", "output")


def block_errors(qp, kp, head, scales, config, progress=None, vp=None, metric="probability"):
    """Per-block errors ``{0: e0, 4: e4, 8: e8}`` and ``2: e2`` with 2-bit blocks (float32 [nq, nk]) of one head
    in its token order, and ``"mass"``: each block's attention mass (which masks and floors follow).

    ``probability``: ``e_b = sum |P - P_b|`` over the block (``e0`` = its mass). ``output`` (needs ``vp``, fp V
    in the same order): ``e_b = sum over the block's query rows r of |sum_k dP_rk (v_k - o_r)|_1`` with
    ``dP = P - P_b`` over the block's keys: the change of row r's output when only this block's P changes and
    the row is renormalised, to first order (exactly: that divided by the row's remaining mass ``1 - sum_k
    dP_rk``). Rounding noise mostly cancels in that sum; a skipped block's missing mass does
    not, so the output metric weighs the two as the attention output sees them."""
    if metric not in ERROR_METRICS:
        raise ParoError(f"unknown error metric {metric!r}; choose one of {', '.join(ERROR_METRICS)}")
    B, n = config.block_size, head.n_tokens
    padded = head.q8.shape[0]
    nb = padded // B
    d = qp.shape[1]
    k_mean = scales[3]
    valid = np.arange(padded) < n
    kpad = np.zeros((padded, d), dtype=np.float32)
    kpad[:n] = kp
    # K as the engine's K reduction leaves it, per computed bitwidth below 8 (dequantised)
    reduced = {b: (float(1 << golden.K_REDUCE_SHIFT[b]) * golden.reduce_k(head.k8, b)
                   * np.repeat(head.k_scale, B)[:, None]).T.astype(np.float32)
               for b in (2, 4) if b in config.bitwidths}
    out = {b: np.zeros((nb, nb), dtype=np.float32) for b in ("mass", 0, *reduced, 8)}
    if metric == "output":
        v_blocks = np.zeros((padded, d), dtype=np.float32)
        v_blocks[:n] = vp
        v_blocks = v_blocks.reshape(nb, B, d)

    def error(dp, o):
        """The metric's error of each key block for the rows' probability change ``dp``."""
        if metric == "probability":
            return _block_sum(np.abs(dp), B).sum(axis=0)
        blocks = dp.reshape(dp.shape[0], nb, B).transpose(1, 0, 2)              # (key block, row, key)
        change = blocks @ v_blocks - blocks.sum(axis=2)[:, :, None] * o[None]    # (key block, row, d)
        return np.abs(change).sum(axis=(1, 2))

    for i in range(nb):
        rows = slice(i * B, min((i + 1) * B, n))
        if rows.start >= n:
            break
        s = (qp[rows].astype(np.float32) @ kpad.T) / np.float32(np.sqrt(d))
        s[:, ~valid] = -np.inf
        m = s.max(axis=1, keepdims=True)
        pt = np.exp(s - m)
        l = pt.sum(axis=1, keepdims=True)
        p = pt / l
        q_deq = head.q8[rows].astype(np.float32) * np.float32(head.q_scale[i])
        shift = (qp[rows].astype(np.float32) @ k_mean.astype(np.float32)[:, None]) / np.float32(np.sqrt(d))
        o = p @ v_blocks.reshape(padded, d) if metric == "output" else None
        out["mass"][i] = _block_sum(p, B).sum(axis=0)
        out[0][i] = out["mass"][i] if metric == "probability" else error(p, o)
        out[8][i] = error(p - _p_round(pt, golden.P_LEVELS[8], B) / l, o)
        for b, k_b in reduced.items():
            s_b = (q_deq @ k_b) / np.float32(np.sqrt(d)) + shift
            s_b[:, ~valid] = -np.inf
            pt_b = np.minimum(np.exp(s_b - m), 1.0)
            out[b][i] = error(p - _p_round(pt_b, golden.P_LEVELS[b], B) / l, o)
        if progress:
            progress()
    for b in out:
        out[b] /= n
    return out


#: Query blocks per head (per order) the accuracy is measured on: all of them up to this many, else this
#: many evenly spaced ones. The golden model and the fp64 references of every query block of a CogVideoX head
#: (278 blocks) cost ~40 s of its 79 s; with 32 blocks (2,048 query tokens) one head's cosine came out 0.9998
#: against 0.9999 measured whole and its rel_l1 0.0136 against 0.0124 (the sample's spread for one head).
#: Heads of up to 32 blocks (``tiny``, ``small``) are measured whole.
EVAL_QUERY_BLOCKS = 32


def evaluation_blocks(blocks):
    """The query blocks the accuracy of a head with ``blocks`` query blocks is measured on."""
    if blocks <= EVAL_QUERY_BLOCKS:
        return list(range(blocks))
    return sorted(set(np.linspace(0, blocks - 1, EVAL_QUERY_BLOCKS).round().astype(int).tolist()))


def _masked_rows(qp, kp, vp, bitmap, config, blocks):
    """fp64 attention over the kept blocks only (full precision), query blocks ``blocks``: the sparsity loss."""
    B, n = config.block_size, qp.shape[0]
    keep_cols = np.repeat(bitmap > 0, B, axis=1)[:, :n]
    rows = [attention_rows(qp, kp, i * B, min((i + 1) * B, n), valid=keep_cols[i], dtype=np.float64)
            @ vp.astype(np.float64) for i in blocks if i * B < n]
    return np.concatenate(rows)


def _dense_rows(q, k, v, tokens, config):
    """fp64 dense attention of the query ``tokens`` (original order), ``block_size`` rows at a time."""
    out = []
    for start in range(0, len(tokens), config.block_size):
        rows = q[tokens[start:start + config.block_size]]
        out.append(attention_rows(rows, k, 0, rows.shape[0], dtype=np.float64) @ v.astype(np.float64))
    return np.concatenate(out)


def _evaluate(qkv, permuted, head, bitmap, config, index):
    """Golden-model output, the same kept blocks at full precision, and fp64 dense attention for the real
    query tokens of :func:`evaluation_blocks`: three aligned (tokens, d) float64 arrays. ``qkv`` in the
    original token order, ``permuted`` the same in the head's order (``index``: its permutation indices)."""
    B, n = config.block_size, head.n_tokens
    blocks = evaluation_blocks(bitmap.shape[0])
    positions = np.concatenate([np.arange(i * B, min((i + 1) * B, n)) for i in blocks])
    codes, out_exp = golden.attention_head(head, bitmap, config, rows=blocks)
    out = codes[positions].astype(np.float64) * 2.0 ** -out_exp
    fp = _masked_rows(*permuted, bitmap, config, blocks)
    return out, fp, _dense_rows(*qkv, index[positions], config)


def _check_holdout(workload, holdout):
    if holdout.layout != workload.layout or holdout.head_dim != workload.head_dim:
        raise ParoError(f"the held-out Q/K/V must have the calibration data's layout and head_dim "
                        f"({workload.layout.to_dict()}, d {workload.head_dim}), got {holdout.layout.to_dict()}, "
                        f"d {holdout.head_dim}")
    if holdout.heads < workload.heads:
        raise ParoError(f"the held-out Q/K/V has {holdout.heads} heads, the plan {workload.heads}")
    if holdout.source() == workload.source():
        raise ParoError("the held-out Q/K/V is the calibration data itself; pass another sample or file")


def held_out_quality(holdout, entries, config, layout):
    """The plan's orders and bitmaps on Q/K/V they were not calibrated on: golden-model output vs fp64
    dense attention (``cosine``, ``rel_l1``) and the same kept blocks at full precision. Quantisation scales
    (and the K mean) come from the held-out data itself, as the host computes them for each run."""
    totals = {"plan": _Metrics(), "fp_mask": _Metrics()}
    per_head = []
    progress = Progress(len(entries), "held-out evaluation")
    for entry in entries:
        h, order, bitmap = entry["head"], entry["order"], entry["bitmap_chosen"]
        qkv = holdout.head(h)
        permuted = tuple(permute_tokens(x, layout, order, axis=0) for x in qkv)
        head, _ = quantize_head(*permuted, config.block_size)
        out, fp, ref = _evaluate(qkv, permuted, head, bitmap, config, permutation_indices(layout, order))
        totals["plan"].add(out, ref)
        totals["fp_mask"].add(fp, ref)
        cosine, rel_l1 = _metrics(out, ref)
        per_head.append({"head": h, "cosine": cosine, "rel_l1": rel_l1})
        progress()
    cosine, rel_l1 = totals["plan"].result()
    cosine_fp, rel_l1_fp = totals["fp_mask"].result()
    return {"workload": holdout.source(), "cosine": cosine, "rel_l1": rel_l1, "cosine_fp_mask": cosine_fp,
            "rel_l1_fp_mask": rel_l1_fp, "scales": "from the held-out data (per block, as the host computes "
                                                    "them each run); orders and bitmaps from the plan",
            "heads": per_head}


def calibrate(workload, config=None, density=None, avg_bits=None, log=None, allocation="ilp", holdout=None,
              error_metric="probability"):
    """Calibrate every head of ``workload``; returns ``(BlockPlan, report dict)``. ``allocation``: the bit
    allocation method (:mod:`sw.allocation`: ``ilp`` or ``lagrangian``); ``error_metric``: what it minimises
    (:data:`ERROR_METRICS`, :func:`block_errors`). ``holdout``: another workload of the
    same layout (another sample or step), or a list of them, to evaluate the plan on as well
    (:func:`held_out_quality`; the report's ``heldout`` is a dict, or a list for a list)."""
    if density is None and avg_bits is None:
        raise ParoError("give --density, --avg-bits or both")
    if error_metric not in ERROR_METRICS:
        raise ParoError(f"unknown --error-metric {error_metric!r}; choose one of {', '.join(ERROR_METRICS)}")
    if config is None:
        config = AcceleratorConfig(head_dim=workload.head_dim)
    if config.head_dim != workload.head_dim:
        raise ParoError(f"the config's head_dim {config.head_dim} does not match the workload's "
                        f"{workload.head_dim}; pass --head-dim {workload.head_dim}")
    layout, B = workload.layout, config.block_size
    if -(-layout.tokens // B) * B > config.max_seq_len:
        raise ParoError(f"{layout.tokens} tokens exceed the config's max_seq_len {config.max_seq_len}")
    low_bits = min(b for b in config.bitwidths if b > 0)
    if density is not None and not 0 < density <= 1:
        raise ParoError(f"--density must be in (0, 1], got {density}")
    if avg_bits is not None and not 0 < avg_bits <= 8:
        raise ParoError(f"--avg-bits must be in (0, 8], got {avg_bits}")
    if density is not None and avg_bits is not None and avg_bits < density * low_bits - 1e-9:
        raise ParoError(f"--avg-bits {avg_bits} is below what --density {density} needs at {low_bits} bits "
                        f"({density * low_bits:.3f}); raise --avg-bits or lower --density")
    holdouts = holdout if isinstance(holdout, (list, tuple)) else [] if holdout is None else [holdout]
    for other in holdouts:
        _check_holdout(workload, other)
    eval_density = density if density is not None else 0.25
    nb = -(-layout.tokens // B)
    log = log or (lambda message: print(f"[paro] {message}", file=sys.stderr, flush=True))

    heads = []
    progress = Progress(workload.heads * 3 * nb, f"calibrate {workload.heads} heads x {layout.tokens} tokens")
    for h in range(workload.heads):
        q, k, v = workload.head(h)
        masses = block_masses(q, k, layout, B, progress=lambda rows: progress(1))
        captured = {o: captured_mass(masses[o], eval_density) for o in PERMUTATIONS}
        # Ties (within float noise: some orders put the same tokens in every block) keep FHW, else the
        # first order in PERMUTATIONS, so the choice never rests on the order of floating-point sums.
        top = max(captured.values())
        order = next(o for o in (IDENTITY,) + PERMUTATIONS if captured[o] >= top - 1e-9)
        entry = {"head": h, "kind": workload.head_kind(h), "order": order, "captured_mass": captured,
                 "identity_top25_mass": captured_mass(masses[IDENTITY], 0.25),
                 "block_mass": masses[order], "block_mass_identity": masses[IDENTITY]}
        for tag, o in (("chosen", order), ("identity", IDENTITY)):
            if tag == "identity" and o == order:
                entry["identity"] = entry["chosen"]
                progress(nb)
                continue
            qp, kp, vp = (permute_tokens(x, layout, o, axis=0) for x in (q, k, v))
            head, scales = quantize_head(qp, kp, vp, B)
            entry[tag] = {"order": o, "scales": scales,
                          "errors": block_errors(qp, kp, head, scales, config, progress=lambda: progress(1),
                                                 vp=vp, metric=error_metric)}
        heads.append(entry)

    log(f"allocating block bitwidths ({allocation})")
    allocation_report = None
    for tag in ("chosen", "identity"):
        maps, info = allocate([e[tag]["errors"] for e in heads], config.bitwidths, density, avg_bits, allocation)
        allocation_report = allocation_report or info
        for entry, bitmap in zip(heads, maps):
            entry[f"bitmap_{tag}"] = bitmap
    for entry in heads:
        try:
            check_kept_keys(config, entry["bitmap_chosen"])
        except ParoError as error:
            raise ParoError(f"head {entry['head']}: {error}, or lower --density") from None

    report_heads = []
    totals = {key: _Metrics() for key in ("chosen", "identity", "fp_mask")}
    progress = Progress(workload.heads, "golden model and fp64 references")
    for entry in heads:
        h = entry["head"]
        qkv = workload.head(h)
        result = {}
        for tag in ("chosen", "identity"):
            o = entry[tag]["order"]
            permuted = tuple(permute_tokens(x, layout, o, axis=0) for x in qkv)
            head, _ = quantize_head(*permuted, B, scales=entry[tag]["scales"])
            result[tag] = _evaluate(qkv, permuted, head, entry[f"bitmap_{tag}"], config,
                                    permutation_indices(layout, o))
        (out, fp, ref), (out_id, fp_id, ref_id) = result["chosen"], result["identity"]
        totals["chosen"].add(out, ref)
        totals["identity"].add(out_id, ref_id)
        totals["fp_mask"].add(fp, ref)
        bitmap = entry["bitmap_chosen"]
        cosine, rel_l1 = _metrics(out, ref)
        cosine_fp, rel_l1_fp = _metrics(fp, ref)
        cosine_id, rel_l1_id = _metrics(out_id, ref_id)
        cosine_fp_id, rel_l1_fp_id = _metrics(fp_id, ref_id)
        kept = bitmap > 0
        report_heads.append({
            "head": h, "kind": entry["kind"], "order": entry["order"],
            "density": float(kept.mean()), "avg_bits": float(bitmap.mean()),
            "avg_bits_kept": float(bitmap[kept].mean()),
            "blocks_by_bits": {str(b): int((bitmap == b).sum()) for b in config.bitwidths},
            "cosine": cosine, "rel_l1": rel_l1, "cosine_fp_mask": cosine_fp, "rel_l1_fp_mask": rel_l1_fp,
            "cosine_identity": cosine_id, "rel_l1_identity": rel_l1_id,
            "cosine_fp_mask_identity": cosine_fp_id, "rel_l1_fp_mask_identity": rel_l1_fp_id,
            "captured_mass": entry["captured_mass"], "identity_top25_mass": entry["identity_top25_mass"],
            "reorder_gain": entry["captured_mass"][entry["order"]] - entry["captured_mass"][IDENTITY],
        })
        progress()

    all_maps = np.stack([e["bitmap_chosen"] for e in heads])
    cosine, rel_l1 = totals["chosen"].result()
    cosine_fp, rel_l1_fp = totals["fp_mask"].result()
    cosine_id, rel_l1_id = totals["identity"].result()
    pays = [r["head"] for r in report_heads if r["reorder_gain"] >= REORDER_PAYS_GAIN]
    report = {
        "workload": workload.source(), "config": config.to_dict(), "layout": layout.to_dict(),
        "budget": {"density": density, "avg_bits": avg_bits, "eval_density": eval_density},
        "error_metric": error_metric,
        "allocation": allocation_report,
        "density": float((all_maps > 0).mean()), "avg_bits": float(all_maps.mean()),
        "avg_bits_kept": float(all_maps[all_maps > 0].mean()),
        "cosine": cosine, "rel_l1": rel_l1, "cosine_fp_mask": cosine_fp, "rel_l1_fp_mask": rel_l1_fp,
        "quantization_loss": cosine_fp - cosine,
        "cosine_identity": cosine_id, "rel_l1_identity": rel_l1_id,
        "reorder_pays": {
            "criterion": f"best order captures >= {REORDER_PAYS_GAIN} more attention mass than the identity "
                         f"order at density {eval_density}",
            "heads": pays,
            "rel_l1_reduction": {str(r["head"]): 1 - r["rel_l1"] / r["rel_l1_identity"]
                                 for r in report_heads if r["head"] in pays},
        },
        "evaluation": {"query_blocks_per_head": len(evaluation_blocks(nb)), "of": nb,
                       "rule": f"every query block up to {EVAL_QUERY_BLOCKS}, else {EVAL_QUERY_BLOCKS} evenly "
                               f"spaced ones, per token order"},
        "metric_notes": {
            "cosine, rel_l1": "golden-model output (planned bitwidths) vs fp64 dense attention",
            "cosine_fp_mask": "same kept blocks at full precision vs fp64 dense attention",
            "captured_mass": "attention mass kept by the top blocks at eval_density, per token order",
            "identity_top25_mass": "mass the best 25% of blocks capture under the identity order",
        },
        "heads": report_heads,
    }
    if holdouts:
        held = [held_out_quality(other, heads, config, layout) for other in holdouts]
        report["heldout"] = held if isinstance(holdout, (list, tuple)) else held[0]
    plan = BlockPlan(
        config=config, layout=layout, orders=[e["order"] for e in heads], bitmap=all_maps,
        q_scale=np.stack([e["chosen"]["scales"][0] for e in heads]),
        k_scale=np.stack([e["chosen"]["scales"][1] for e in heads]),
        v_scale=np.stack([e["chosen"]["scales"][2] for e in heads]),
        k_mean=np.stack([e["chosen"]["scales"][3] for e in heads]),
        block_mass=np.stack([e["block_mass"] for e in heads]),
        block_mass_identity=np.stack([e["block_mass_identity"] for e in heads]),
        source=workload.source(), budget=report["budget"])
    return plan, report
