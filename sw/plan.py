"""BlockPlan: the contract between calibration (``sw``) and the hardware (golden model, benches, scheduler).

On disk: an ``.npz`` (numpy zip, loaded with ``allow_pickle=False``; no pickled objects) holding

==================== ================================= =====================================================
array                dtype / shape                     meaning
==================== ================================= =====================================================
``header``           uint8 [n]                         UTF-8 JSON: format, version, config, layout, source
``orders``           uint8 [heads]                     index into ``PERMUTATIONS`` per head
``bitmap``           uint8 [heads, nq, nk]             block bitwidth, values in ``config.bitwidths``
``q_scale``          float64 [heads, nq]               INT8 Q scale per query block (> 0)
``k_scale``          float64 [heads, nk]               INT8 smoothed-K scale per key block (> 0)
``v_scale``          float64 [heads, nk]               INT8 V scale per key block (> 0)
``k_mean``           float64 [heads, head_dim]         the token mean subtracted from K
``block_mass``       float32 [heads, nq, nk]           attention mass per block, chosen order (for plots)
``block_mass_identity`` float32 [heads, nq, nk]        the same in the identity (FHW) order
==================== ================================= =====================================================

Header JSON: ``{"format": "paro-blockplan", "version": 1, "config": {AcceleratorConfig}, "layout":
{frames, height, width, text_tokens}, "heads": H, "source": {how to rebuild Q/K/V}, "budget": {...}}``.
``nq = nk = ceil(tokens / block_size)``. :func:`load_plan` validates every field and refuses a bad file with
one line naming the field.
"""

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.files import atomic_write_bytes, read_npz

from .reorder import PERMUTATIONS, TokenLayout
from .workloads import WORKLOADS

__all__ = ["PLAN_FORMAT", "PLAN_VERSION", "BlockPlan", "save_plan", "load_plan"]

PLAN_FORMAT = "paro-blockplan"
PLAN_VERSION = 1


@dataclasses.dataclass
class BlockPlan:
    config: AcceleratorConfig
    layout: TokenLayout
    orders: list              # permutation name per head
    bitmap: np.ndarray        # uint8 [heads, nq, nk]
    q_scale: np.ndarray
    k_scale: np.ndarray
    v_scale: np.ndarray
    k_mean: np.ndarray
    block_mass: np.ndarray
    block_mass_identity: np.ndarray
    source: dict
    budget: dict

    @property
    def heads(self):
        return self.bitmap.shape[0]

    def scales(self, h):
        return self.q_scale[h], self.k_scale[h], self.v_scale[h], self.k_mean[h]


def save_plan(plan, path):
    """Write ``plan`` to ``path`` atomically (no partial file on error)."""
    header = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "config": plan.config.to_dict(),
              "layout": plan.layout.to_dict(), "heads": plan.heads, "source": plan.source, "budget": plan.budget}
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
        orders=np.array([PERMUTATIONS.index(o) for o in plan.orders], dtype=np.uint8),
        bitmap=plan.bitmap.astype(np.uint8),
        q_scale=plan.q_scale.astype(np.float64), k_scale=plan.k_scale.astype(np.float64),
        v_scale=plan.v_scale.astype(np.float64), k_mean=plan.k_mean.astype(np.float64),
        block_mass=plan.block_mass.astype(np.float32),
        block_mass_identity=plan.block_mass_identity.astype(np.float32),
    )
    atomic_write_bytes(path, buffer.getvalue())


_ARRAYS = {
    "orders": ("u", ("heads",)),
    "bitmap": ("u", ("heads", "nq", "nk")),
    "q_scale": ("f", ("heads", "nq")),
    "k_scale": ("f", ("heads", "nk")),
    "v_scale": ("f", ("heads", "nk")),
    "k_mean": ("f", ("heads", "head_dim")),
    "block_mass": ("f", ("heads", "nq", "nk")),
    "block_mass_identity": ("f", ("heads", "nq", "nk")),
}


def load_plan(path):
    """Read and validate a plan; any defect raises a one-line :class:`ParoError` naming the field."""
    path = Path(path)
    arrays = read_npz(path, "plan file", "recreate it with `paro calibrate`")

    def bad(field, why):
        return ParoError(f"plan file {str(path)!r}: field {field!r} {why}")

    if "header" not in arrays:
        raise bad("header", "is missing")
    try:
        header = json.loads(arrays["header"].astype(np.uint8).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
        raise bad("header", "is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise bad("header", "is not a JSON object")
    if header.get("format") != PLAN_FORMAT:
        raise bad("header.format", f"must be {PLAN_FORMAT!r}, got {header.get('format')!r}")
    if header.get("version") != PLAN_VERSION:
        raise bad("header.version", f"must be {PLAN_VERSION} (this paro reads version {PLAN_VERSION}), "
                                    f"got {header.get('version')!r}")
    for key in ("config", "layout", "heads", "source", "budget"):
        if key not in header:
            raise bad(f"header.{key}", "is missing")
    try:
        config = AcceleratorConfig.from_dict(header["config"])
    except (ParoError, TypeError) as error:
        raise bad("header.config", f"is invalid: {error}") from None
    try:
        layout = TokenLayout(**header["layout"])
    except (ParoError, TypeError) as error:
        raise bad("header.layout", f"is invalid: {error}") from None
    heads = header["heads"]
    if not isinstance(heads, int) or heads < 1:
        raise bad("header.heads", f"must be a positive integer, got {heads!r}")
    _check_source(header["source"], layout, heads, bad)
    _check_budget(header["budget"], bad)

    blocks = -(-layout.tokens // config.block_size)
    dims = {"heads": heads, "nq": blocks, "nk": blocks, "head_dim": config.head_dim}
    for name, (kind, shape) in _ARRAYS.items():
        if name not in arrays:
            raise bad(name, "is missing")
        array = arrays[name]
        if array.dtype.kind != kind:
            raise bad(name, f"must have dtype {'uint8' if kind == 'u' else 'float'}, got {array.dtype}")
        expected = tuple(dims[d] for d in shape)
        if array.shape != expected:
            raise bad(name, f"must have shape {expected} ({', '.join(shape)}), got {array.shape}")
        if kind == "f" and not np.isfinite(array).all():
            raise bad(name, "contains NaN or infinity")
    if arrays["orders"].max(initial=0) >= len(PERMUTATIONS):
        raise bad("orders", f"must index the {len(PERMUTATIONS)} permutations, got {int(arrays['orders'].max())}")
    bitmap = arrays["bitmap"]
    allowed = set(config.bitwidths)
    found = set(int(b) for b in np.unique(bitmap))
    if not found <= allowed:
        raise bad("bitmap", f"has bitwidth {min(found - allowed)} not in the plan's set {sorted(allowed)}")
    empty = np.argwhere((bitmap > 0).sum(axis=2) == 0)
    if len(empty):
        h, i = empty[0]
        raise bad("bitmap", f"head {h} query block {i} keeps no key block; every query row needs one")
    for name in ("q_scale", "k_scale", "v_scale"):
        if arrays[name].min() <= 0:
            raise bad(name, "must be positive")
    return BlockPlan(config, layout, [PERMUTATIONS[o] for o in arrays["orders"]], bitmap.astype(np.uint8),
                     arrays["q_scale"], arrays["k_scale"], arrays["v_scale"], arrays["k_mean"],
                     arrays["block_mass"], arrays["block_mass_identity"], header["source"], header["budget"])


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _check_source(source, layout, heads, bad):
    """How the plan's Q/K/V are rebuilt: a built-in workload (name, seed, heads) or a file (path, SHA-256)."""
    if not isinstance(source, dict):
        raise bad("header.source", f"must be a JSON object, got {type(source).__name__}")
    kind = source.get("kind")
    if kind not in ("synthetic", "file"):
        raise bad("header.source.kind", f"must be 'synthetic' or 'file', got {kind!r}")
    if source.get("layout") != layout.to_dict():
        raise bad("header.source.layout", f"must equal header.layout {layout.to_dict()}, got {source.get('layout')!r}")
    if kind == "synthetic":
        if source.get("name") not in WORKLOADS:
            raise bad("header.source.name", f"must be one of {', '.join(WORKLOADS)}, got {source.get('name')!r}")
        if not _is_int(source.get("seed")):
            raise bad("header.source.seed", f"must be an integer, got {source.get('seed')!r}")
        if not _is_int(source.get("sample", 0)):
            raise bad("header.source.sample", f"must be an integer, got {source.get('sample')!r}")
        if source.get("heads") != heads:
            raise bad("header.source.heads", f"must equal header.heads ({heads}), got {source.get('heads')!r}")
    else:
        if not isinstance(source.get("path"), str) or not source["path"]:
            raise bad("header.source.path", f"must be the Q/K/V file's path, got {source.get('path')!r}")
        digest = source.get("sha256")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise bad("header.source.sha256", f"must be 64 lowercase hex digits, got {digest!r}")


def _check_budget(budget, bad):
    """The calibration budgets: ``density`` and ``avg_bits`` (each a number or null), ``eval_density``."""
    if not isinstance(budget, dict):
        raise bad("header.budget", f"must be a JSON object, got {type(budget).__name__}")
    for key in ("density", "avg_bits", "eval_density"):
        if key not in budget:
            raise bad(f"header.budget.{key}", "is missing")
        value = budget[key]
        if (value is None and key != "eval_density") or (_is_number(value) and value >= 0):
            continue
        raise bad(f"header.budget.{key}", f"must be a non-negative number{'' if key == 'eval_density' else ' or null'}, "
                                          f"got {value!r}")
