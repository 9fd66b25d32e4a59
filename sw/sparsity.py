"""Block sparsity: attention mass per block (for all six token orders at once) and block masks.

The attention map is never held whole: its rows arrive one query block at a time (``B x tokens`` float32;
:func:`sw.calibrate.block_errors` computes them for its own errors and hands them on), so memory stays
``O(B x tokens)`` even for CogVideoX's 17,776 tokens.
"""

import numpy as np

from paro.errors import ParoError

from .reorder import PERMUTATIONS, permutation_indices

__all__ = ["attention_rows", "MassAccumulator", "block_mask", "captured_mass"]


def attention_rows(q, k, start, stop, valid=None, dtype=np.float32):
    """Softmax rows ``start:stop`` of ``softmax(q k^T / sqrt(d))`` (keys outside ``valid`` get 0)."""
    s = (q[start:stop].astype(dtype) @ k.T.astype(dtype)) / dtype(np.sqrt(q.shape[1]))
    if valid is not None:
        s[:, ~valid] = -np.inf
    s -= s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=1, keepdims=True)
    return s


class MassAccumulator:
    """Attention mass per (query block, key block) in several token orders at once, from softmax rows handed
    in a block of query rows at a time (:meth:`add`): ``result()`` gives ``{order: float64[nq, nk]}``,
    normalised so the whole map sums to 1 (each real query row contributes ``1 / tokens``).

    The rows come transposed, ``(keys, rows)``, in any key order: ``key_tokens[c]`` is the token of key row
    ``c`` (default: token order); keys of a token ``>= tokens`` (padding) are ignored. Each block of rows is
    summed into the key blocks of every order by one product with a sparse one-hot matrix (key -> key block,
    per order), and into each order's query blocks by a bincount, without gathering the rows into each order
    first. Memory: ``O(orders x blocks**2)``."""

    #: Blocks of rows whose key-block sums wait to be added into the masses together (one bincount per order).
    FLUSH = 16

    def __init__(self, layout, block_size, orders=PERMUTATIONS, key_tokens=None):
        from scipy.sparse import csr_array   # the CLI starts without scipy
        n = self.tokens = layout.tokens
        self.orders = tuple(orders)
        nb = self.blocks = -(-n // block_size)
        key_tokens = np.arange(n) if key_tokens is None else np.asarray(key_tokens)
        real = np.nonzero(key_tokens < n)[0]
        # token -> its block in each order
        self.block_of = {o: np.argsort(permutation_indices(layout, o)) // block_size for o in self.orders}
        key_block = np.concatenate([n_o * nb + self.block_of[o][key_tokens[real]]
                                    for n_o, o in enumerate(self.orders)])
        self.onehot_t = csr_array((np.ones(key_block.size, dtype=np.float32),
                                   (key_block, np.tile(real, len(self.orders)))),
                                  shape=(nb * len(self.orders), key_tokens.size))
        self.masses = {o: np.zeros((nb, nb)) for o in self.orders}
        self.pending = {o: [] for o in self.orders}

    def add(self, start, rows_t):
        """Softmax rows (float32, transposed: ``(keys, rows)``, keys as ``key_tokens``) of query tokens
        ``start``, ``start + 1``, ..."""
        count, nb = rows_t.shape[1], self.blocks
        by_key_block = self.onehot_t @ rows_t                                   # (orders x nb, rows)
        for n_o, o in enumerate(self.orders):
            target = self.block_of[o][start:start + count] * nb + np.arange(nb)[:, None]   # (nb, rows)
            self.pending[o].append((target.ravel(), by_key_block[n_o * nb:(n_o + 1) * nb].ravel()))
        if len(self.pending[self.orders[0]]) >= self.FLUSH:
            self._flush()

    def _flush(self):
        """Add the pending rows' block sums into each order's (query block, key block) masses."""
        for o, parts in self.pending.items():
            if parts:
                target, weight = (np.concatenate(x) for x in zip(*parts))
                self.masses[o] += np.bincount(target, weights=weight, minlength=self.blocks ** 2).reshape(
                    self.blocks, self.blocks)
                parts.clear()

    def result(self):
        """``{order: float64[nq, nk]}`` of every row added so far."""
        self._flush()
        return {o: m / self.tokens for o, m in self.masses.items()}


def block_mask(mass, density):
    """Keep the ``round(density * blocks)`` highest-mass blocks, plus each query row's best block."""
    if not 0 < density <= 1:
        raise ParoError(f"--density must be in (0, 1], got {density}")
    keep = max(1, int(round(density * mass.size)))
    mask = np.zeros(mass.shape, dtype=bool)
    mask.flat[np.argsort(-mass, axis=None, kind="stable")[:keep]] = True
    mask[np.arange(mass.shape[0]), np.argmax(mass, axis=1)] = True
    return mask


def captured_mass(mass, density):
    """Fraction of the attention mass that the mask of :func:`block_mask` at ``density`` keeps."""
    return float(mass[block_mask(mass, density)].sum() / mass.sum())
