"""Video-attention inputs: built-in synthetic workloads made like a model makes them, and real Q/K/V files.

How the built-in workloads are built (and why their patterns resemble video diffusion transformers'):

* **Content** comes from real photographs shipped with scikit-image (astronaut, coffee, chelsea, rocket).
  Each frame is a crop of the picture that moves a few pixels per frame (camera motion), cut into one patch
  per (h, w) token; a patch's pixels are the token's content vector. Neighbouring patches and the same patch
  in the next frame are similar, as in real video latents.
* **Position** enters through 3D rotary features, as in CogVideoX's 3D RoPE: for each axis (frame, height,
  width) and frequency w, ``cos(w p)`` and ``sin(w p)`` pairs, so ``q . k`` contains
  ``g_axis^2 * sum_w cos(w (p_q - p_k))``: a kernel of the *relative* position along each axis, peaked at
  zero. How sharply a head weights each axis (its gains ``g_f, g_h, g_w``) is what a trained head learns;
  it sets the pattern:

  ========== ====================== ==========================================================
  kind       gains (F, H, W)        pattern
  ========== ====================== ==========================================================
  spatial    sharp, local, local    local window within the frame (block-local in FHW order)
  temporal   flat, sharp, sharp     same position across frames (scattered in FHW; HWF fixes it)
  row        sharp, sharp, flat     a row of the same frame (contiguous in FHW already)
  column     sharp, flat, sharp     a column of the same frame (scattered in FHW; FWH fixes it)
  global     weak, weak, weak       content-driven with strong sink tokens
  ========== ====================== ==========================================================

* **Content similarity**: ``q`` and ``k`` carry projections of the content through related matrices, so
  similar patches attend to each other, which blurs every pattern the way real attention maps are blurred.
* **Sinks**: text tokens carry a key direction that every query shares (the attention-sink behaviour of
  text tokens in MM-DiT models); strong in the ``global`` kind, mild in the others.
* **V** is a projection of the content plus noise.

Nothing is drawn as a mask: the attention map is ``softmax(q k^T / sqrt(d))`` of these vectors, so how
concentrated it is under the identity order is measured, not chosen (the calibrate report states it).

Real data: :func:`load_qkv` reads ``q``, ``k``, ``v`` (heads, tokens, head_dim) from an ``.npz`` file with the
text tokens first, then video tokens in frame-major order.
"""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from paro.errors import ParoError
from paro.files import read_npz

from .reorder import TokenLayout

__all__ = ["HEAD_KINDS", "WORKLOADS", "Workload", "SyntheticWorkload", "FileWorkload", "make_workload",
           "load_qkv", "file_sha256"]

HEAD_KINDS = ("spatial", "temporal", "row", "column", "global")

#: Positional gains (frame, height, width) per head kind, and the sink strength.
_KIND_GAINS = {
    "spatial":  ((1.12, 0.77, 0.77), 0.8),
    "temporal": ((0.0, 0.91, 0.91), 0.8),
    "row":      ((1.12, 0.91, 0.0), 0.8),
    "column":   ((1.12, 0.0, 0.91), 0.8),
    "global":   ((0.25, 0.25, 0.25), 2.2),
}

#: Named sizes: token grid (F, H, W), text tokens, heads, head dimension.
WORKLOADS = {
    "tiny":      dict(grid=(2, 4, 8), text_tokens=32, heads=4, head_dim=32),
    "small":     dict(grid=(8, 8, 16), text_tokens=64, heads=8, head_dim=64),
    "cogvideox": dict(grid=(13, 30, 45), text_tokens=226, heads=48, head_dim=64),
}

_CONTENT_GAIN = 0.5
_KEY_NOISE = 1.5
_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")
_PATCH = 4              # pixels per patch side
_MOTION = (2, 3)        # pixels per frame (down, right)


class Workload:
    """Q/K/V of one attention layer, served one head at a time (float32, (tokens, head_dim) each)."""

    layout: TokenLayout
    heads: int
    head_dim: int
    name: str

    def head(self, h):
        raise NotImplementedError

    def head_kind(self, h):
        """Pattern kind of head ``h`` if known (synthetic workloads), else ``None``."""
        return None

    def source(self):
        """JSON-able description from which :func:`make_workload` rebuilds the same data."""
        raise NotImplementedError


@dataclasses.dataclass
class SyntheticWorkload(Workload):
    name: str
    layout: TokenLayout
    heads: int
    head_dim: int
    seed: int = 0
    sample: int = 0

    def __post_init__(self):
        if self.head_dim < 16 or self.head_dim % 4:
            raise ParoError(f"synthetic workloads need head_dim >= 16 and a multiple of 4, got {self.head_dim}")
        if not 0 <= self.sample < len(_IMAGES):
            raise ParoError(f"a synthetic workload has {len(_IMAGES)} samples (0..{len(_IMAGES) - 1}), got {self.sample}")
        self._content = None

    # --- content ----------------------------------------------------------------------------------------
    def _video_content(self):
        """(video_tokens, 3 * PATCH**2) patch pixels in [0, 1], frame-major; cached."""
        if self._content is None:
            from skimage import data, transform
            lay = self.layout
            image = getattr(data, _IMAGES[(self.seed + self.sample) % len(_IMAGES)])().astype(np.float32) / 255.0
            need_h = lay.height * _PATCH + _MOTION[0] * (lay.frames - 1)
            need_w = lay.width * _PATCH + _MOTION[1] * (lay.frames - 1)
            scale = max(need_h / image.shape[0], need_w / image.shape[1], 1e-9)
            image = transform.resize(image, (max(need_h, int(image.shape[0] * scale + 0.5)),
                                             max(need_w, int(image.shape[1] * scale + 0.5))),
                                     anti_aliasing=True).astype(np.float32)
            frames = []
            for f in range(lay.frames):
                y, x = _MOTION[0] * f, _MOTION[1] * f
                crop = image[y:y + lay.height * _PATCH, x:x + lay.width * _PATCH]
                patches = crop.reshape(lay.height, _PATCH, lay.width, _PATCH, 3).transpose(0, 2, 1, 3, 4)
                frames.append(patches.reshape(lay.height * lay.width, -1))
            content = np.concatenate(frames)
            content -= content.mean(axis=0)
            content /= content.std() + 1e-6
            self._content = content
        return self._content

    # --- position -----------------------------------------------------------------------------------------
    def _rotary(self, n_freq):
        """(tokens, 3, 2 * n_freq) rotary features per axis; text tokens get zeros (no position)."""
        lay = self.layout
        f, h, w = np.meshgrid(np.arange(lay.frames), np.arange(lay.height), np.arange(lay.width), indexing="ij")
        feats = np.zeros((lay.tokens, 3, 2 * n_freq), dtype=np.float64)
        for axis, (pos, length) in enumerate(((f, lay.frames), (h, lay.height), (w, lay.width))):
            omegas = [np.pi / 2 ** k for k in range(1, n_freq)] + [np.pi / (2 * max(length, 2))]
            pos = pos.reshape(-1).astype(np.float64)
            for n, omega in enumerate(omegas):
                feats[lay.text_tokens:, axis, 2 * n] = np.cos(omega * pos)
                feats[lay.text_tokens:, axis, 2 * n + 1] = np.sin(omega * pos)
        return feats

    def head_kind(self, h):
        return HEAD_KINDS[h % len(HEAD_KINDS)]

    def head(self, h):
        if not 0 <= h < self.heads:
            raise ParoError(f"head {h} out of range: the workload has {self.heads} heads")
        lay, d = self.layout, self.head_dim
        rng = np.random.default_rng([self.seed, h])
        gains, sink = _KIND_GAINS[self.head_kind(h)]
        n_freq = max(2, d // 16)
        d_pos = 3 * 2 * n_freq
        d_content = d - d_pos - 1            # one dimension carries the sink direction
        content = self._video_content()
        c_dim = content.shape[1]
        text = rng.standard_normal((lay.text_tokens, c_dim)).astype(np.float32)
        # Another sample: other content (photograph) and text through the same head weights.
        other = np.random.default_rng([self.seed, h, self.sample]) if self.sample else None
        if other is not None:
            text = other.standard_normal(text.shape).astype(np.float32)
        tokens = np.concatenate([text, content])

        wq = rng.standard_normal((c_dim, d_content)) / np.sqrt(c_dim)
        wk = wq + _KEY_NOISE * rng.standard_normal((c_dim, d_content)) / np.sqrt(c_dim)
        wv = rng.standard_normal((c_dim, d)) / np.sqrt(c_dim)
        content_gain = _CONTENT_GAIN * d ** 0.25
        q_content = content_gain * tokens @ wq
        k_content = content_gain * tokens @ wk

        rot = self._rotary(n_freq)
        pos_scale = d ** 0.25                # q.k / sqrt(d) then sees gain^2 * kernel
        q_pos = np.concatenate([pos_scale * g * rot[:, a] for a, g in enumerate(gains)], axis=1)
        k_pos = q_pos.copy()

        q_sink = np.full((lay.tokens, 1), sink * d ** 0.25)
        k_sink = np.zeros((lay.tokens, 1))
        k_sink[:lay.text_tokens] = 2.0 * d ** 0.25

        q = np.concatenate([q_content, q_pos, q_sink], axis=1)
        k = np.concatenate([k_content, k_pos, k_sink], axis=1)
        noise = rng.standard_normal((lay.tokens, d))
        v = tokens @ wv + 0.3 * (noise if other is None else other.standard_normal(noise.shape))
        return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)

    def source(self):
        return {"kind": "synthetic", "name": self.name, "layout": self.layout.to_dict(), "heads": self.heads,
                "head_dim": self.head_dim, "seed": self.seed, "sample": self.sample}


@dataclasses.dataclass
class FileWorkload(Workload):
    """Q/K/V loaded from an ``.npz`` file (see :func:`load_qkv`)."""
    path: str
    layout: TokenLayout
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    sha256: str

    @property
    def name(self):
        return Path(self.path).name

    @property
    def heads(self):
        return self.q.shape[0]

    @property
    def head_dim(self):
        return self.q.shape[2]

    def head(self, h):
        return self.q[h].astype(np.float32), self.k[h].astype(np.float32), self.v[h].astype(np.float32)

    def source(self):
        return {"kind": "file", "path": str(Path(self.path).resolve()), "sha256": self.sha256,
                "layout": self.layout.to_dict()}


def load_qkv(path, layout):
    """Load ``q``, ``k``, ``v`` of shape (heads, tokens, head_dim) from ``path``; validate against ``layout``."""
    path = Path(path)
    arrays = read_npz(path, "Q/K/V file", "save it with numpy.savez(path, q=..., k=..., v=...)")
    for name in ("q", "k", "v"):
        if name not in arrays:
            raise ParoError(f"Q/K/V file {str(path)!r} has no array {name!r}; it needs q, k and v")
        array = arrays[name]
        if array.ndim != 3:
            raise ParoError(f"Q/K/V file array {name!r} must be (heads, tokens, head_dim), got shape {array.shape}")
        if array.dtype.kind != "f":
            raise ParoError(f"Q/K/V file array {name!r} must be floating point, got {array.dtype}")
        if not np.isfinite(array).all():
            raise ParoError(f"Q/K/V file array {name!r} contains NaN or infinity")
    shape = arrays["q"].shape
    for name in ("k", "v"):
        if arrays[name].shape != shape:
            raise ParoError(f"Q/K/V file arrays must share one shape: q is {shape}, {name} is {arrays[name].shape}")
    if shape[1] != layout.tokens:
        raise ParoError(f"Q/K/V file has {shape[1]} tokens but --grid {layout.frames},{layout.height},"
                        f"{layout.width} with --text-tokens {layout.text_tokens} means {layout.tokens}")
    return FileWorkload(str(path), layout, arrays["q"], arrays["k"], arrays["v"], file_sha256(path))


def file_sha256(path):
    """SHA-256 (hex) of a Q/K/V file, as a plan records it; a missing file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ParoError(f"Q/K/V file {str(path)!r} does not exist (the plan was calibrated on it); "
                        f"restore it or recalibrate")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_workload(name=None, *, qkv=None, layout=None, seed=0, heads=None, sample=0):
    """A built-in workload by ``name``, or a file workload from ``qkv`` with its ``layout``."""
    if qkv is not None:
        if layout is None:
            raise ParoError("a Q/K/V file needs its token layout: pass --grid F,H,W and --text-tokens T")
        workload = load_qkv(qkv, layout)
        if heads is not None and not 1 <= heads <= workload.heads:
            raise ParoError(f"--heads must be in [1, {workload.heads}] for Q/K/V file {Path(qkv).name}, got {heads}")
        if heads is not None:
            workload.q, workload.k, workload.v = workload.q[:heads], workload.k[:heads], workload.v[:heads]
        return workload
    if name not in WORKLOADS:
        raise ParoError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)} or pass --qkv FILE")
    spec = WORKLOADS[name]
    frames, height, width = spec["grid"]
    count = spec["heads"] if heads is None else heads
    if not 1 <= count <= spec["heads"]:
        raise ParoError(f"--heads must be in [1, {spec['heads']}] for workload {name}, got {count}")
    return SyntheticWorkload(name, TokenLayout(frames, height, width, spec["text_tokens"]), count,
                             spec["head_dim"], seed, sample)
