"""Block sparsity: attention mass per block (for all six token orders at once) and block masks.

The attention map is never held whole: rows are computed one query block at a time (``B x tokens``
float32), so memory stays ``O(B x tokens)`` even for CogVideoX's 17,776 tokens.
"""

import numpy as np

from paro.errors import ParoError

from .reorder import PERMUTATIONS, permutation_indices

__all__ = ["attention_rows", "block_masses", "block_mask", "captured_mass"]


def attention_rows(q, k, start, stop, valid=None, dtype=np.float32):
    """Softmax rows ``start:stop`` of ``softmax(q k^T / sqrt(d))`` (keys outside ``valid`` get 0)."""
    s = (q[start:stop].astype(dtype) @ k.T.astype(dtype)) / dtype(np.sqrt(q.shape[1]))
    if valid is not None:
        s[:, ~valid] = -np.inf
    s -= s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=1, keepdims=True)
    return s


def block_masses(q, k, layout, block_size, orders=PERMUTATIONS, progress=None):
    """Attention mass per (query block, key block) in each token order: ``{order: float64[nq, nk]}``.

    Normalised so the whole map sums to 1 (each real query row contributes ``1 / tokens``). Padding tokens
    (the last block's tail) carry no mass. One pass over the attention rows serves all orders: each block of
    rows is summed into the key blocks of every order at once, by one product with a sparse one-hot matrix
    (token -> key block, per order), without gathering the rows into each order first.
    """
    from scipy.sparse import csr_array   # the CLI starts without scipy
    n = layout.tokens
    nb = -(-n // block_size)
    position = {o: np.argsort(permutation_indices(layout, o)) for o in orders}   # token -> position in order
    key_block = np.concatenate([n_o * nb + position[o] // block_size for n_o, o in enumerate(orders)])
    onehot_t = csr_array((np.ones(n * len(orders), dtype=np.float32), (key_block, np.tile(np.arange(n), len(orders)))),
                         shape=(nb * len(orders), n))
    masses = {o: np.zeros((nb, nb)) for o in orders}
    for start in range(0, n, block_size):
        rows = attention_rows(q, k, start, min(start + block_size, n))
        by_key_block = (onehot_t @ rows.T).T                                  # (rows, orders x nb)
        for n_o, o in enumerate(orders):
            np.add.at(masses[o], position[o][start:start + rows.shape[0]] // block_size,
                      by_key_block[:, n_o * nb:(n_o + 1) * nb])
        if progress:
            progress(rows.shape[0])
    for o in orders:
        masses[o] /= n
    return masses


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
