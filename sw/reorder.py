"""PAROAttention's pattern-aware token reordering: the six permutations of the (frame, height, width) axes.

Token layout (as in CogVideoX and PAROAttention's kernels): the ``text_tokens`` text tokens come first and
are never permuted; the video tokens follow in frame-major (F, H, W) order. A permutation name lists the
axes from outermost to innermost: ``"HWF"`` walks height, then width, then frame fastest, so tokens at the
same (h, w) position in consecutive frames become neighbours.

The choice of permutation per head is made in :mod:`sw.calibrate` from the attention mass each order
concentrates into the kept blocks (see there for the metric).
"""

import dataclasses

import numpy as np

from paro.errors import ParoError

__all__ = ["PERMUTATIONS", "TokenLayout", "permutation_indices", "permute_tokens", "unpermute_tokens"]

PERMUTATIONS = ("FHW", "FWH", "HFW", "HWF", "WFH", "WHF")


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Tokens of one attention call: ``text_tokens`` text tokens, then F x H x W video tokens."""
    frames: int
    height: int
    width: int
    text_tokens: int = 0

    def __post_init__(self):
        for name in ("frames", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise ParoError(f"token grid {name} must be >= 1, got {getattr(self, name)}")
        if int(self.text_tokens) < 0:
            raise ParoError(f"text_tokens must be >= 0, got {self.text_tokens}")

    @property
    def video_tokens(self):
        return self.frames * self.height * self.width

    @property
    def tokens(self):
        return self.text_tokens + self.video_tokens

    def padded(self, block_size):
        """Token count rounded up to whole blocks (the padding is masked, never attended to)."""
        return -(-self.tokens // block_size) * block_size

    def to_dict(self):
        return dataclasses.asdict(self)


def permutation_indices(layout, order):
    """Index array ``idx`` with ``permuted = tokens[idx]`` for permutation ``order`` (e.g. ``"HWF"``)."""
    if order not in PERMUTATIONS:
        raise ParoError(f"unknown permutation {order!r}; choose one of {', '.join(PERMUTATIONS)}")
    sizes = {"F": layout.frames, "H": layout.height, "W": layout.width}
    grid = np.arange(layout.video_tokens).reshape(layout.frames, layout.height, layout.width)
    video = grid.transpose(["FHW".index(axis) for axis in order]).reshape(-1)
    assert video.size == np.prod([sizes[a] for a in order])
    return np.concatenate([np.arange(layout.text_tokens), layout.text_tokens + video])


def permute_tokens(x, layout, order, axis=-2):
    """Reorder the token axis of ``x`` (default: second to last, as in (heads, tokens, d))."""
    return np.take(x, permutation_indices(layout, order), axis=axis)


def unpermute_tokens(x, layout, order, axis=-2):
    """Inverse of :func:`permute_tokens`: back to frame-major token order."""
    return np.take(x, np.argsort(permutation_indices(layout, order)), axis=axis)
