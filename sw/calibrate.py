"""``paro calibrate``: choose each head's token order, block mask and block bitwidths; measure the accuracy.

Per head, two passes over the attention rows, one query block at a time (memory ``O(B x tokens)``):

1. **Identity order, and every order's masses.** The per-block errors (below) in the identity order (FHW,
   the token order), and from the same softmax rows the attention mass per block for all six orders
   (:class:`sw.sparsity.MassAccumulator`). The order metric: the fraction of the attention mass that the
   kept blocks capture at the evaluation density (``--density``, or 0.25 when only ``--avg-bits`` is given).
   The order with the largest captured mass wins; ties (within 1e-9) keep FHW, else the first in
   ``PERMUTATIONS``.
2. **Errors in the chosen order** (none when it is FHW): the per-block errors the bit allocation minimises
   (:func:`block_errors`): ``e0`` (block mass), ``e2``, ``e4`` and ``e8`` (L1 of the attention probabilities
   when the block's P is computed at 2 bits with K reduced to 2 bits, at 4 bits with K reduced to 4 bits, or
   at 8 bits; ``e2`` only for a configuration with 2-bit blocks) - see :mod:`sw.quant`. The identity order's
   errors give the comparison plan.
   Bitwidths are then allocated jointly for all heads of the layer (:mod:`sw.allocation`: integer
   programming by default, the Lagrangian as the fast option; the report gives both objectives).
3. **Accuracy.** The bit-exact golden model's output (:func:`sw.golden.attention_head`), dequantised and
   un-permuted, against fp64 dense attention: ``cosine`` and ``rel_l1``; the same kept blocks at full
   precision (``cosine_fp_mask``) separate the sparsity loss from the quantisation loss; the identity order
   at the same budgets gives ``cosine_identity`` / ``rel_l1_identity``.
4. **Held-out** (optional): the same measurement on Q/K/V the plan was not calibrated on (another sample or
   step), with the plan's orders and bitmaps (:func:`held_out_quality`).

Heads run ``jobs`` at a time in threads (:func:`parallel_map`), phases 1-2 and 3 each; the report's
``seconds`` gives each phase's wall clock. A CogVideoX-5B layer (48 heads x 17,776 tokens) calibrates in
under 3 minutes on 2 cores (``make bench-calibration``, ``results/calibration_speed_cogvideox.json``).
"""

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from paro.config import AcceleratorConfig
from paro.errors import ParoError

from . import golden
from .contract import check_kept_keys
from .plan import BlockPlan
from .allocation import allocate
from .quant import quantize_head
from .reorder import PERMUTATIONS, permute_tokens
from .sparsity import MassAccumulator, attention_rows, captured_mass

__all__ = ["calibrate", "held_out_quality", "block_errors", "key_interleave", "fitting_seq_len", "Progress",
           "REORDER_PAYS_GAIN", "ERROR_METRICS", "parallel_map", "default_jobs", "dense_rows"]

IDENTITY = "FHW"
#: A head's pattern "runs across the identity order's contiguous axis" when the best order captures at
#: least this much more attention mass than the identity order at the evaluation density.
REORDER_PAYS_GAIN = 0.10


def fitting_seq_len(layout, block_size):
    """The smallest ``max_seq_len`` (a power of two, at least 64) that holds ``layout``'s tokens padded to
    ``block_size``: the softmax widths follow the sequence length, so a plan fits the smallest engine that
    runs it."""
    return max(64, 1 << (layout.padded(block_size) - 1).bit_length())


def default_jobs():
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_map(function, items, jobs=None):
    """``[function(item) for item in items]``, ``jobs`` items at a time in threads (default
    :func:`default_jobs`). numpy releases the GIL inside its loops, so heads run on separate cores; BLAS is
    held to one thread for the duration (threads of its own would contend with the workers, and results must
    not depend on how many there are)."""
    from threadpoolctl import threadpool_limits   # the CLI starts without it
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ParoError(f"--jobs must be at least 1, got {jobs}")
    items = list(items)
    with threadpool_limits(limits=1, user_api="blas"):
        if jobs == 1 or len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(min(jobs, len(items))) as pool:
            return list(pool.map(function, items))


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per 10% otherwise. Callable from
    several threads."""

    def __init__(self, total, label, stream=None, items=None):
        self.lock = threading.Lock()
        self.total, self.label, self.done = max(1, total), label, 0
        self.items, self.items_done = items, 0   # e.g. heads: the bar then says how many are finished
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.last_decile = -1

    def __call__(self, amount=1):
        with self.lock:
            self._advance(amount)

    def item_done(self):
        """One of ``items`` finished: redrawn on a terminal, and a line when the last one is."""
        with self.lock:
            self.items_done += 1
            self._advance(0, force=self.items_done == self.items)

    def _advance(self, amount, force=False):
        self.done = min(self.total, self.done + amount)
        fraction = self.done / self.total
        elapsed = time.monotonic() - self.start
        eta = elapsed / fraction - elapsed if fraction > 0 else 0
        bar = "#" * int(30 * fraction)
        items = f" ({self.items_done}/{self.items} heads done)" if self.items else ""
        text = (f"[paro] {self.label} [{bar:<30}] {100 * fraction:5.1f}%{items} {elapsed:6.0f}s elapsed, "
                f"~{eta:.0f}s left")
        # the last line waits for the last item when items are counted
        final = self.done == self.total and (not self.items or self.items_done >= self.items)
        pending = self.done == self.total and not final
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
            self.stream.flush()
        elif (int(10 * fraction) > self.last_decile or force) and not pending:
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


#: The per-block error the bit allocation minimises: ``probability`` (L1 of the attention probabilities),
#: ``output`` (L1 of the attention output the block's error causes) or ``output-mse`` (the squared L2 of that
#: change: the output's squared error, blocks' errors adding as independent noise).
ERROR_METRICS = ("probability", "output", "output-mse")


def key_interleave(blocks, block_size):
    """Key order of the calibration's score columns: row ``w * blocks + j`` of a ``(keys, query rows)`` score
    matrix holds key ``j * block_size + w``. Viewed as ``(block_size, blocks, rows)``, every per-(row, block)
    peak or sum and every per-row maximum or sum then reduces over leading axes, element-wise across
    contiguous vectors (vectorised), instead of over ``block_size``-long runs one block at a time, which is
    several times slower in numpy; and the matrix goes to the sparse mass sums without a transposed copy."""
    return (np.arange(blocks)[None, :] * block_size + np.arange(block_size)[:, None]).ravel()


def _round_p(x, levels):
    """Float model of :func:`sw.golden.p_quantize` on exp values ``x`` (B, blocks, rows) in the layout of
    :func:`key_interleave`, values above 1 clamped to 1 first (in place): per (row, block) a leading-zero scale
    from the block's peak, then ``levels`` steps. Returns the rounded values (a new array)."""
    peak = x.max(axis=0)
    over = peak > 1
    if over.any():                       # a reduced K can score above the row's fp maximum: rare, fixed in place
        j, r = np.nonzero(over)
        x[:, j, r] = np.minimum(x[:, j, r], 1.0)
        peak = np.minimum(peak, 1.0)
    factor = 2.0 ** np.clip(np.floor(-np.log2(np.maximum(peak, 1e-30))), 0, golden.P_SHIFT_MAX) * levels
    y = x * factor
    np.rint(y, out=y)
    y /= factor
    return y


def block_errors(qp, kp, head, scales, config, progress=None, vp=None, metric="probability", masses=None):
    """Per-block errors ``{0: e0, 4: e4, 8: e8}`` and ``2: e2`` with 2-bit blocks (float32 [nq, nk]) of one head
    in its token order, and ``"mass"``: each block's attention mass (which masks and floors follow).

    ``probability``: ``e_b = sum |P - P_b|`` over the block (``e0`` = its mass). ``output`` and ``output-mse``
    (need ``vp``, fp V in the same order): per query row r of the block, the change of row r's output when
    only this block changes, to first order, as the engine normalises: it divides by the row sum of the
    numerators *before* P is rounded, so a change the row sum sees (a skipped block's removal, the score change
    of a reduced K) is renormalised, ``sum_k dE_rk (v_k - o_r) / l_r``, and the P rounding is not,
    ``sum_k dR_rk v_k / l_r`` (``dE``, ``dR``: the unnormalised numerator changes, ``l_r`` the row sum).
    ``output`` sums the L1 of that change over the block's rows, ``output-mse`` its squared L2.

    One query block at a time (memory ``O(B x tokens)``), scores as ``(keys, rows)`` with the keys in the
    order of :func:`key_interleave`; per query block one fp score product and one per reduced K (2 and 4
    bits); each row's differences are summed unnormalised (``|exp(s - m) - round(exp(s_b - m))|``) and
    divided by its softmax sum once per block. ``masses``: a :class:`sw.sparsity.MassAccumulator` (keys as
    :func:`key_interleave`) that the softmax rows are added to as they are computed, for the masses of every
    order from this one pass; the rows must then be in token order (the identity order)."""
    if metric not in ERROR_METRICS:
        raise ParoError(f"unknown error metric {metric!r}; choose one of {', '.join(ERROR_METRICS)}")
    B, n = config.block_size, head.n_tokens
    padded = head.q8.shape[0]
    nb = padded // B
    d = qp.shape[1]
    inv_sqrt_d = np.float32(1 / np.sqrt(d))       # a power of two for d = 4**k: scaling Q first is exact
    order = key_interleave(nb, B)
    keys = np.zeros((padded, d), dtype=np.float32)
    keys[:n] = kp
    keys = keys[order]
    tail = n - (nb - 1) * B                       # real keys of the last key block
    q_scaled = np.asarray(qp, dtype=np.float32) * inv_sqrt_d
    k_mean = np.asarray(scales[3], dtype=np.float32)
    # K as the engine's K reduction leaves it, per computed bitwidth below 8 (dequantised)
    reduced = {b: (float(1 << golden.k_reduce_shift(b, config.k_cuts))
                   * golden.reduce_k(head.k8, b, config.k_cuts)
                   * np.repeat(head.k_scale, B)[:, None])[order].astype(np.float32)
               for b in (2, 4) if b in config.bitwidths}
    out = {b: np.zeros((nb, nb), dtype=np.float32) for b in ("mass", 0, *reduced, 8)}
    if metric != "probability":
        v_blocks = np.zeros((padded, d), dtype=np.float32)
        v_blocks[:n] = vp
        v_keys = v_blocks[order]
        v_blocks = v_blocks.reshape(nb, B, d)

    def error(row_sum, seen=None, rounding=None):
        """The metric's error per key block of unnormalised numerator changes (B, nb, rows): ``seen`` by the
        row sum (renormalised at the output) and ``rounding`` (P's, not renormalised); the probability metric
        takes their total as ``seen``."""
        if metric == "probability":
            return (np.abs(seen, out=seen).sum(axis=0) / row_sum).sum(axis=1)
        change = 0
        if seen is not None:
            by_block = np.ascontiguousarray(seen.transpose(1, 2, 0))                # (key block, row, key)
            change = by_block @ v_blocks - by_block.sum(axis=2)[:, :, None] * o[None]   # (key block, row, d)
        if rounding is not None:
            change = change + np.ascontiguousarray(rounding.transpose(1, 2, 0)) @ v_blocks
        if metric == "output":
            return (np.abs(change).sum(axis=2) / row_sum).sum(axis=1)
        return (np.square(change).sum(axis=2) / np.square(row_sum)).sum(axis=1)

    for i in range(nb):
        rows_i = slice(i * B, min((i + 1) * B, n))
        if rows_i.start >= n:
            break
        s = keys @ q_scaled[rows_i].T                                    # (keys, rows)
        s3 = s.reshape(B, nb, -1)
        s3[tail:, nb - 1] = -np.inf
        m = s3.max(axis=0).max(axis=0)                                  # per block, then per row: vectorised
        s -= m
        pt = np.exp(s, out=s)
        pt3 = pt.reshape(s3.shape)
        block_sums = pt3.sum(axis=0)
        l = block_sums.sum(axis=0)
        o = (pt.T @ v_keys) / l[:, None] if metric != "probability" else None
        if masses is not None:
            masses.add(rows_i.start, pt / l)
        out["mass"][i] = (block_sums / l).sum(axis=1)
        out[0][i] = out["mass"][i] if metric == "probability" else error(l, seen=pt3.copy())
        delta = _round_p(pt3, golden.P_LEVELS[8])
        delta -= pt3
        out[8][i] = error(l, seen=delta) if metric == "probability" else error(l, rounding=delta)
        q_deq = head.q8[rows_i].astype(np.float32) * np.float32(head.q_scale[i]) * inv_sqrt_d
        shift = q_scaled[rows_i] @ k_mean
        for b, k_b in reduced.items():
            s_b = k_b @ q_deq.T
            s_b += shift
            s_b -= m
            s_b3 = s_b.reshape(s3.shape)
            s_b3[tail:, nb - 1] = -np.inf
            np.exp(s_b, out=s_b)
            delta = _round_p(s_b3, golden.P_LEVELS[b])         # (clamps s_b3 at 1 first, in place)
            if metric == "probability":
                delta -= pt3
                out[b][i] = error(l, seen=delta)
            else:
                delta -= s_b3                                   # the P rounding
                s_b3 -= pt3                                     # the reduced K's numerator change
                out[b][i] = error(l, seen=s_b3, rounding=delta)
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


def _reference_rows(qp, kp, vp, bitmap, config, blocks):
    """fp64 references of query blocks ``blocks`` (in the head's order): dense attention, and attention over
    the kept blocks only at full precision (the sparsity loss). One score product serves both; the kept
    keys' softmax reuses the dense exponentials (its own normalisation)."""
    B, n = config.block_size, qp.shape[0]
    keys, values = kp.astype(np.float64).T, vp.astype(np.float64)
    scale = 1 / np.sqrt(qp.shape[1])
    dense, masked = [], []
    for i in blocks:
        if i * B >= n:
            continue
        e = (qp[i * B:min((i + 1) * B, n)].astype(np.float64) @ keys) * scale
        e -= e.max(axis=1, keepdims=True)
        np.exp(e, out=e)
        dense.append((e @ values) / e.sum(axis=1, keepdims=True))
        e[:, ~np.repeat(bitmap[i] > 0, B)[:n]] = 0
        masked.append((e @ values) / e.sum(axis=1, keepdims=True))
    return np.concatenate(masked), np.concatenate(dense)


def dense_rows(q, k, v, tokens, config):
    """fp64 dense attention of the query ``tokens`` (original order), ``block_size`` rows at a time."""
    out = []
    for start in range(0, len(tokens), config.block_size):
        rows = q[tokens[start:start + config.block_size]]
        out.append(attention_rows(rows, k, 0, rows.shape[0], dtype=np.float64) @ v.astype(np.float64))
    return np.concatenate(out)


def _evaluate(permuted, head, bitmap, config):
    """Golden-model output, the same kept blocks at full precision, and fp64 dense attention for the real
    query tokens of :func:`evaluation_blocks`: three aligned (tokens, d) float64 arrays, in the head's token
    order (``permuted``: Q/K/V in it)."""
    B, n = config.block_size, head.n_tokens
    blocks = evaluation_blocks(bitmap.shape[0])
    positions = np.concatenate([np.arange(i * B, min((i + 1) * B, n)) for i in blocks])
    codes, out_exp = golden.attention_head(head, bitmap, config, rows=blocks)
    out = codes[positions].astype(np.float64) * 2.0 ** -out_exp
    return (out, *_reference_rows(*permuted, bitmap, config, blocks))


def _check_holdout(workload, holdout):
    if holdout.layout != workload.layout or holdout.head_dim != workload.head_dim:
        raise ParoError(f"the held-out Q/K/V must have the calibration data's layout and head_dim "
                        f"({workload.layout.to_dict()}, d {workload.head_dim}), got {holdout.layout.to_dict()}, "
                        f"d {holdout.head_dim}")
    if holdout.heads < workload.heads:
        raise ParoError(f"the held-out Q/K/V has {holdout.heads} heads, the plan {workload.heads}")
    if holdout.source() == workload.source():
        raise ParoError("the held-out Q/K/V is the calibration data itself; pass another sample or file")


def held_out_quality(holdout, entries, config, layout, jobs=None):
    """The plan's orders and bitmaps on Q/K/V they were not calibrated on: golden-model output vs fp64
    dense attention (``cosine``, ``rel_l1``) and the same kept blocks at full precision. Quantisation scales
    (and the K mean) come from the held-out data itself, as the host computes them for each run."""
    progress = Progress(len(entries), "held-out evaluation")

    def one(entry):
        h, order, bitmap = entry["head"], entry["order"], entry["bitmap_chosen"]
        qkv = holdout.head(h)
        permuted = tuple(permute_tokens(x, layout, order, axis=0) for x in qkv)
        head, _ = quantize_head(*permuted, config.block_size)
        out, fp, ref = _evaluate(permuted, head, bitmap, config)
        progress()
        return h, out, fp, ref

    totals = {"plan": _Metrics(), "fp_mask": _Metrics()}
    per_head = []
    for h, out, fp, ref in parallel_map(one, entries, jobs):
        totals["plan"].add(out, ref)
        totals["fp_mask"].add(fp, ref)
        cosine, rel_l1 = _metrics(out, ref)
        per_head.append({"head": h, "cosine": cosine, "rel_l1": rel_l1})
    cosine, rel_l1 = totals["plan"].result()
    cosine_fp, rel_l1_fp = totals["fp_mask"].result()
    return {"workload": holdout.source(), "cosine": cosine, "rel_l1": rel_l1, "cosine_fp_mask": cosine_fp,
            "rel_l1_fp_mask": rel_l1_fp, "scales": "from the held-out data (per block, as the host computes "
                                                    "them each run); orders and bitmaps from the plan",
            "heads": per_head}


def _order_and_errors(workload, h, config, eval_density, error_metric, progress):
    """Head ``h``'s token order (by captured mass) and the block errors in it and in the identity order."""
    layout, B = workload.layout, config.block_size
    nb = -(-layout.tokens // B)
    q, k, v = workload.head(h)
    # The identity order is the token order: its error pass also gives every order's block masses.
    accumulator = MassAccumulator(layout, B, key_tokens=key_interleave(nb, B))
    head, scales = quantize_head(q, k, v, B)
    identity = {"order": IDENTITY, "scales": scales,
                "errors": block_errors(q, k, head, scales, config, progress=lambda: progress(1), vp=v,
                                       metric=error_metric, masses=accumulator)}
    masses = accumulator.result()
    captured = {o: captured_mass(masses[o], eval_density) for o in PERMUTATIONS}
    # Ties (within float noise: some orders put the same tokens in every block) keep FHW, else the
    # first order in PERMUTATIONS, so the choice never rests on the order of floating-point sums.
    top = max(captured.values())
    order = next(o for o in (IDENTITY,) + PERMUTATIONS if captured[o] >= top - 1e-9)
    entry = {"head": h, "kind": workload.head_kind(h), "order": order, "captured_mass": captured,
             "identity_top25_mass": captured_mass(masses[IDENTITY], 0.25),
             "block_mass": masses[order], "block_mass_identity": masses[IDENTITY], "identity": identity}
    if order == IDENTITY:
        entry["chosen"] = identity
        progress(nb)
    else:
        qp, kp, vp = (permute_tokens(x, layout, order, axis=0) for x in (q, k, v))
        head, scales = quantize_head(qp, kp, vp, B)
        entry["chosen"] = {"order": order, "scales": scales,
                           "errors": block_errors(qp, kp, head, scales, config, progress=lambda: progress(1),
                                                  vp=vp, metric=error_metric)}
    progress.item_done()
    return entry


def _head_quality(workload, entry, config, progress):
    """One head's report entry: the golden model's accuracy in its order and in the identity order, the same
    kept blocks at full precision; ``arrays``: the (output, reference) pairs the layer's totals add up."""
    layout, B = workload.layout, config.block_size
    qkv = workload.head(entry["head"])
    result = {}
    for tag in ("chosen", "identity"):
        if tag == "identity" and entry["identity"] is entry["chosen"] and np.array_equal(
                entry["bitmap_identity"], entry["bitmap_chosen"]):
            result[tag] = result["chosen"]             # the identity order chosen, the same bits: same numbers
            continue
        o = entry[tag]["order"]
        permuted = tuple(permute_tokens(x, layout, o, axis=0) for x in qkv)
        head, _ = quantize_head(*permuted, B, scales=entry[tag]["scales"])
        result[tag] = _evaluate(permuted, head, entry[f"bitmap_{tag}"], config)
    (out, fp, ref), (out_id, fp_id, ref_id) = result["chosen"], result["identity"]
    bitmap = entry["bitmap_chosen"]
    cosine, rel_l1 = _metrics(out, ref)
    cosine_fp, rel_l1_fp = _metrics(fp, ref)
    cosine_id, rel_l1_id = _metrics(out_id, ref_id)
    cosine_fp_id, rel_l1_fp_id = _metrics(fp_id, ref_id)
    kept = bitmap > 0
    progress()
    return {
        "head": entry["head"], "kind": entry["kind"], "order": entry["order"],
        "density": float(kept.mean()), "avg_bits": float(bitmap.mean()),
        "avg_bits_kept": float(bitmap[kept].mean()),
        "blocks_by_bits": {str(b): int((bitmap == b).sum()) for b in config.bitwidths},
        "cosine": cosine, "rel_l1": rel_l1, "cosine_fp_mask": cosine_fp, "rel_l1_fp_mask": rel_l1_fp,
        "cosine_identity": cosine_id, "rel_l1_identity": rel_l1_id,
        "cosine_fp_mask_identity": cosine_fp_id, "rel_l1_fp_mask_identity": rel_l1_fp_id,
        "captured_mass": entry["captured_mass"], "identity_top25_mass": entry["identity_top25_mass"],
        "reorder_gain": entry["captured_mass"][entry["order"]] - entry["captured_mass"][IDENTITY],
        "arrays": {"chosen": (out, ref), "identity": (out_id, ref_id), "fp_mask": (fp, ref)},
    }


def calibrate(workload, config=None, density=None, avg_bits=None, log=None, allocation="ilp", holdout=None,
              error_metric="probability", jobs=None):
    """Calibrate every head of ``workload``; returns ``(BlockPlan, report dict)``. ``allocation``: the bit
    allocation method (:mod:`sw.allocation`: ``ilp`` or ``lagrangian``); ``error_metric``: what it minimises
    (:data:`ERROR_METRICS`, :func:`block_errors`). ``holdout``: another workload of the
    same layout (another sample or step), or a list of them, to evaluate the plan on as well
    (:func:`held_out_quality`; the report's ``heldout`` is a dict, or a list for a list). ``jobs``: heads
    calibrated at once (:func:`parallel_map`; default: the CPUs this process may use); the plan and the
    report do not depend on it."""
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

    jobs = default_jobs() if jobs is None else jobs
    clock = [time.monotonic()]
    seconds = {}

    def phase(name):
        now = time.monotonic()
        seconds[name] = round(now - clock[0], 3)
        clock[0] = now

    progress = Progress(workload.heads * 2 * nb, f"calibrate {workload.heads} heads x {layout.tokens} tokens",
                        items=workload.heads)
    heads = parallel_map(lambda h: _order_and_errors(workload, h, config, eval_density, error_metric, progress),
                         range(workload.heads), jobs)

    phase("orders_and_errors")
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

    phase("allocation")
    progress = Progress(workload.heads, "golden model and fp64 references")
    measured = parallel_map(lambda entry: _head_quality(workload, entry, config, progress), heads, jobs)
    totals = {key: _Metrics() for key in ("chosen", "identity", "fp_mask")}
    for quality in measured:
        for key, (out, ref) in quality.pop("arrays").items():
            totals[key].add(out, ref)
    report_heads = measured

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
    phase("quality")
    if holdouts:
        held = [held_out_quality(other, heads, config, layout, jobs) for other in holdouts]
        report["heldout"] = held if isinstance(holdout, (list, tuple)) else held[0]
        phase("heldout")
    report["seconds"] = {**seconds, "total": round(sum(seconds.values()), 3)}   # wall clock per phase
    report["jobs"] = jobs
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
