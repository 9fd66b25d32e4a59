"""Token permutations: round trips, text tokens untouched, and what each order makes contiguous."""

import numpy as np
import pytest

from paro.errors import ParoError
from paro.sw.reorder import PERMUTATIONS, TokenLayout, permutation_indices, permute_tokens, unpermute_tokens

LAYOUT = TokenLayout(frames=3, height=4, width=5, text_tokens=7)


@pytest.mark.parametrize("order", PERMUTATIONS)
def test_round_trip(order):
    x = np.random.default_rng(0).standard_normal((2, LAYOUT.tokens, 3))
    y = permute_tokens(x, LAYOUT, order)
    assert np.array_equal(unpermute_tokens(y, LAYOUT, order), x)
    idx = permutation_indices(LAYOUT, order)
    assert sorted(idx) == list(range(LAYOUT.tokens))
    assert np.array_equal(idx[:7], np.arange(7))          # text tokens stay first, in place


def test_orders_walk_the_named_axes():
    f, h, w = np.meshgrid(range(3), range(4), range(5), indexing="ij")
    coords = np.stack([f.ravel(), h.ravel(), w.ravel()], axis=1)
    for order in PERMUTATIONS:
        video = permutation_indices(LAYOUT, order)[7:] - 7
        walked = coords[video]
        inner = "FHW".index(order[2])
        # consecutive tokens differ only in the innermost axis (except when it wraps)
        steps = np.abs(np.diff(walked, axis=0))
        same_outer = (steps[:, [a for a in range(3) if a != inner]] == 0).all(axis=1)
        assert (steps[same_outer, inner] == 1).all()
        assert same_outer.sum() == LAYOUT.video_tokens - LAYOUT.video_tokens // [3, 4, 5][inner]


def test_identity_is_frame_major():
    assert np.array_equal(permutation_indices(LAYOUT, "FHW"), np.arange(LAYOUT.tokens))


def test_unknown_order_and_bad_layout():
    with pytest.raises(ParoError, match="unknown permutation 'FFF'"):
        permutation_indices(LAYOUT, "FFF")
    with pytest.raises(ParoError, match="frames must be >= 1, got 0"):
        TokenLayout(0, 2, 2)
    assert TokenLayout(2, 3, 5, 10).padded(16) == 48
