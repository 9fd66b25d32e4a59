"""Mixed-precision quantization: INT8 Q/K/V with per-block scales, and the bitwidth of every attention block.

* Q: one scale per query block (``max|Q| / 127`` over the block's tokens and channels).
* K: smoothed by its mean over the real tokens (``q . (k - mean)`` differs from ``q . k`` by a constant per
  query row, which softmax removes exactly), then one scale per key block.
* V: one scale per key block.

Bit allocation (:func:`allocate_bits`) chooses each block's bitwidth from the configured set to minimise the
summed *attention-probability error* of the blocks, ``sum |P - P_hat|`` (L1 over the block, rows normalised),
which bounds the output error (``|dO| <= sum |dP| max |V|``). Per block it uses three measured errors: ``e0``
(the block's mass, lost when skipped), ``e4`` (P from 4-bit scores and 4-bit P), ``e8`` (8-bit P).
Budgets: ``density`` (fraction of blocks kept per head) and ``avg_bits`` (average over *all* blocks of the
layer, skipped blocks counting 0 - the PARO paper's 4.80-bit definition).
"""

import dataclasses

import numpy as np

from paro.errors import ParoError

from . import golden
from .sparsity import block_mask

__all__ = ["QuantizedHead", "quantize_head", "allocate_bits", "block_mass"]


@dataclasses.dataclass
class QuantizedHead:
    """INT8 inputs of one head in the order the hardware sees them (permuted, padded to whole blocks)."""
    q8: np.ndarray        # int64 (padded tokens, d)
    k8: np.ndarray        # int64, smoothed K
    v8: np.ndarray        # int64
    q_scale: np.ndarray   # float64 (query blocks,)
    k_scale: np.ndarray   # float64 (key blocks,)
    v_scale: np.ndarray   # float64 (key blocks,)
    n_tokens: int         # real tokens; the rest is padding, masked as keys and ignored as queries

    @property
    def head_dim(self):
        return self.q8.shape[1]

    def score_multipliers(self, config):
        return golden.score_multipliers(self.q_scale, self.k_scale, self.head_dim, config)

    def value_multipliers(self, config):
        return golden.value_multipliers(self.v_scale, config.bitwidths)

    def out_exp(self, config):
        return golden.output_format(self.v_scale, config)


def _block_scales(x, block_size):
    blocks = x.reshape(-1, block_size, x.shape[-1])
    scale = np.abs(blocks).max(axis=(1, 2)) / 127.0
    return np.where(scale > 0, scale, 1.0)


def _quantize(x, scales, block_size):
    per_token = np.repeat(scales, block_size)[:, None]
    return np.clip(np.rint(x / per_token), -127, 127).astype(np.int64)


def quantize_head(q, k, v, block_size, scales=None):
    """Quantize one head's (already permuted) float Q/K/V, padding tokens to whole blocks.

    ``scales``: ``(q_scale, k_scale, v_scale, k_mean)`` to reuse (e.g. from a plan); computed when ``None``.
    Returns ``(QuantizedHead, (q_scale, k_scale, v_scale, k_mean))``.
    """
    n, d = q.shape
    padded = -(-n // block_size) * block_size
    pad = ((0, padded - n), (0, 0))
    if scales is None:
        k_mean = k.astype(np.float64).mean(axis=0)
    else:
        k_mean = np.asarray(scales[3], dtype=np.float64)
    qp = np.pad(q.astype(np.float64), pad)
    kp = np.pad(k.astype(np.float64) - k_mean, pad)
    vp = np.pad(v.astype(np.float64), pad)
    if scales is None:
        q_scale, k_scale, v_scale = (_block_scales(x, block_size) for x in (qp, kp, vp))
    else:
        q_scale, k_scale, v_scale = (np.asarray(s, dtype=np.float64) for s in scales[:3])
        expected = padded // block_size
        if any(s.shape != (expected,) for s in (q_scale, k_scale, v_scale)):
            raise ParoError(f"plan scales must have {expected} blocks for {n} tokens at block size {block_size}")
    head = QuantizedHead(_quantize(qp, q_scale, block_size), _quantize(kp, k_scale, block_size),
                         _quantize(vp, v_scale, block_size), q_scale, k_scale, v_scale, n)
    return head, (q_scale, k_scale, v_scale, k_mean)


def block_mass(err):
    """A head's block masses from its errors dict: ``err["mass"]`` where the errors are measured in another
    metric, else ``err[0]`` (the probability metric's e0 is the mass). Masks and row floors follow the mass."""
    return err["mass"] if "mass" in err else err[0]


def allocate_bits(errors, bitwidths, density=None, avg_bits=None):
    """Choose a bitwidth per block for every head of a layer.

    ``errors``: list over heads of dicts ``{b: float[nq, nk]}`` with the error of each block at b bits
    (``errors[h][0]`` is the error of skipping it; masks follow :func:`block_mass`). ``density``: kept
    fraction per head (top blocks by mass).
    ``avg_bits``: budget averaged over all blocks of the layer. Every query row keeps at least its
    highest-mass block. Returns a list of uint8[nq, nk] bitmaps.
    """
    bits = sorted(b for b in bitwidths if b > 0)
    if bits[-1] != 8:
        raise ParoError("the bitwidth set must contain 8")
    maps = []
    if density is not None:
        for err in errors:
            maps.append(np.where(block_mask(block_mass(err), density), bits[0], 0).astype(np.uint8))
        total = sum(m.size for m in maps)
        if avg_bits is None:
            return [np.where(m > 0, 8, 0).astype(np.uint8) for m in maps]
        budget = avg_bits * total
        used = sum(int(m.sum(dtype=np.int64)) for m in maps)
        if used > budget + 1e-9:
            raise ParoError(f"--avg-bits {avg_bits} is below what --density {density} needs at {bits[0]} bits "
                            f"({used / total:.3f}); raise --avg-bits or lower --density")
        if len(bits) > 1:
            # Upgrade kept blocks from the low bitwidth to 8 bits, largest error reduction per bit first.
            gains = np.concatenate([np.where(m == bits[0], err[bits[0]] - err[8], -np.inf).ravel()
                                    for m, err in zip(maps, errors)])
            step = 8 - bits[0]
            count = int(min((budget - used) // step, np.isfinite(gains).sum()))
            chosen = np.argsort(-gains, kind="stable")[:count]
            chosen = chosen[gains[chosen] > 0]
            flat = np.concatenate([m.ravel() for m in maps])
            flat[chosen] = 8
            maps = _split(flat, maps)
        return maps

    if avg_bits is None:
        raise ParoError("give --density, --avg-bits or both")
    if not 0 < avg_bits <= 8:
        raise ParoError(f"--avg-bits must be in (0, 8], got {avg_bits}")
    # Lagrangian relaxation over the whole layer: each block takes argmin_b err_b + lam * b; bisect lam
    # for the largest bit use within the budget.
    choices = [0] + bits
    stacked = np.stack([np.concatenate([err[b].ravel() for err in errors]) for b in choices])
    floor = np.zeros(stacked.shape[1], dtype=bool)
    offset = 0
    for err in errors:
        nq, nk = err[0].shape
        floor[offset + np.arange(nq) * nk + np.argmax(block_mass(err), axis=1)] = True
        offset += nq * nk
    costs = np.array(choices, dtype=np.float64)[:, None]
    budget = avg_bits * stacked.shape[1]

    def pick(lam):
        total = stacked + lam * costs
        total[0, floor] = np.inf
        return np.array(choices)[np.argmin(total, axis=0)]

    low, high = 0.0, float(stacked.max() + 1.0)
    for _ in range(60):
        mid = (low + high) / 2
        if pick(mid).sum() > budget:
            low = mid
        else:
            high = mid
    return _split(pick(high).astype(np.uint8), [err[0] for err in errors])


def _split(flat, like):
    out, offset = [], 0
    for m in like:
        out.append(np.asarray(flat[offset:offset + m.size], dtype=np.uint8).reshape(m.shape))
        offset += m.size
    return out
