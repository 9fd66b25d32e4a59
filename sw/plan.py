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

**Plan sets** (version 2): one file with a plan per (layer, timestep group), as PAROAttention keeps static
plans per timestep group, layer and head. Its ``header`` is ``{"format": "paro-blockplan", "version": 2,
"entries": [{"layer": L, "group": G, "steps": [s, ...]}, ...]}`` and entry ``n``'s arrays are a version-1
plan's (its own ``header`` too) under the names ``entry<n>.<array>``. :func:`load_plan_set` reads both
versions (a version-1 file is a set of one plan, ``layer``/``group``/``steps`` null); :func:`load_plan` picks
one plan by ``layer`` and ``step``. Single plans are still written as version 1.
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

__all__ = ["PLAN_FORMAT", "PLAN_VERSION", "PLAN_SET_VERSION", "BlockPlan", "PlanSet", "save_plan", "load_plan",
           "save_plan_set", "load_plan_set"]

PLAN_FORMAT = "paro-blockplan"
PLAN_VERSION = 1
PLAN_SET_VERSION = 2


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


def _json_array(value):
    return np.frombuffer(json.dumps(value, sort_keys=True).encode(), dtype=np.uint8)


def _plan_arrays(plan):
    """The version-1 arrays of one plan (its header included)."""
    header = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "config": plan.config.to_dict(),
              "layout": plan.layout.to_dict(), "heads": plan.heads, "source": plan.source, "budget": plan.budget}
    return {
        "header": _json_array(header),
        "orders": np.array([PERMUTATIONS.index(o) for o in plan.orders], dtype=np.uint8),
        "bitmap": plan.bitmap.astype(np.uint8),
        "q_scale": plan.q_scale.astype(np.float64), "k_scale": plan.k_scale.astype(np.float64),
        "v_scale": plan.v_scale.astype(np.float64), "k_mean": plan.k_mean.astype(np.float64),
        "block_mass": plan.block_mass.astype(np.float32),
        "block_mass_identity": plan.block_mass_identity.astype(np.float32),
    }


def _write(arrays, path):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def save_plan(plan, path):
    """Write ``plan`` to ``path`` atomically (no partial file on error), as a version-1 file."""
    _write(_plan_arrays(plan), path)


@dataclasses.dataclass
class PlanSet:
    """Plans per (layer, timestep group): ``entries[n]`` = ``{"layer", "group", "steps"}`` of ``plans[n]``."""
    entries: list
    plans: list

    def describe(self):
        layers = sorted({e["layer"] for e in self.entries if e["layer"] is not None})
        groups = sorted({(min(e["steps"]), max(e["steps"])) for e in self.entries if e["steps"]})
        return (f"{len(self.plans)} plans (layers {', '.join(map(str, layers))}; step groups "
                f"{', '.join(f'{a}-{b}' for a, b in groups)})")

    def select(self, layer=None, step=None, where="the plan file"):
        """The plan of ``layer`` whose timestep group holds ``step``; either may be omitted when it leaves
        one plan. Raises a one-line :class:`ParoError` naming what to pass."""
        found = [n for n, e in enumerate(self.entries)
                 if (layer is None or e["layer"] == layer) and (step is None or step in (e["steps"] or []))]
        if len(self.plans) == 1 and layer is None and step is None:
            return self.plans[0]
        if len(found) == 1:
            return self.plans[found[0]]
        if not found:
            raise ParoError(f"{where} has no plan for layer {layer} at step {step}; it holds {self.describe()}")
        raise ParoError(f"{where} holds {self.describe()}; pass --layer and --step to pick one")


def save_plan_set(plan_set, path):
    """Write a :class:`PlanSet` as a version-2 file atomically."""
    if len(plan_set.entries) != len(plan_set.plans) or not plan_set.plans:
        raise ParoError("a plan set needs one entry per plan, and at least one plan")
    arrays = {"header": _json_array({"format": PLAN_FORMAT, "version": PLAN_SET_VERSION,
                                     "entries": plan_set.entries})}
    for n, plan in enumerate(plan_set.plans):
        arrays.update({f"entry{n}.{name}": value for name, value in _plan_arrays(plan).items()})
    _write(arrays, path)


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


def load_plan(path, layer=None, step=None):
    """Read and validate a plan (or the plan of ``layer`` and ``step`` from a plan set); any defect raises a
    one-line :class:`ParoError` naming the field."""
    return load_plan_set(path).select(layer, step, where=f"plan file {str(path)!r}")


def _read_header(arrays, bad, prefix=""):
    if prefix + "header" not in arrays:
        raise bad(prefix + "header", "is missing")
    if arrays[prefix + "header"].dtype != np.uint8:
        raise bad(prefix + "header", f"must be uint8 bytes of JSON, got dtype {arrays[prefix + 'header'].dtype}")
    try:
        header = json.loads(arrays[prefix + "header"].astype(np.uint8).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
        raise bad(prefix + "header", "is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise bad(prefix + "header", "is not a JSON object")
    if header.get("format") != PLAN_FORMAT:
        raise bad(prefix + "header.format", f"must be {PLAN_FORMAT!r}, got {header.get('format')!r}")
    return header


def load_plan_set(path):
    """Read and validate a plan file of either version as a :class:`PlanSet` (see the module docstring)."""
    path = Path(path)
    arrays = read_npz(path, "plan file", "recreate it with `paro calibrate`")

    def bad(field, why):
        return ParoError(f"plan file {str(path)!r}: field {field!r} {why}")

    header = _read_header(arrays, bad)
    if header.get("version") == PLAN_VERSION:
        return PlanSet([{"layer": None, "group": None, "steps": None}], [_plan_from_arrays(arrays, header, bad)])
    if header.get("version") != PLAN_SET_VERSION:
        raise bad("header.version", f"must be {PLAN_VERSION} (one plan) or {PLAN_SET_VERSION} (a plan set), "
                                    f"got {header.get('version')!r}")
    entries = header.get("entries")
    if not isinstance(entries, list) or not entries:
        raise bad("header.entries", f"must be a non-empty list, got {entries!r}")
    plans = []
    for n, entry in enumerate(entries):
        if not (isinstance(entry, dict) and _is_int(entry.get("layer")) and _is_int(entry.get("group"))
                and isinstance(entry.get("steps"), list) and entry["steps"] and all(map(_is_int, entry["steps"]))):
            raise bad(f"header.entries[{n}]", f"must hold an integer layer and group and a non-empty list of "
                                              f"integer steps, got {entry!r}")
        prefix = f"entry{n}."
        sub = {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}
        sub_header = _read_header(arrays, bad, prefix)
        if sub_header.get("version") != PLAN_VERSION:
            raise bad(prefix + "header.version", f"must be {PLAN_VERSION}, got {sub_header.get('version')!r}")
        plans.append(_plan_from_arrays(sub, sub_header, lambda field, why: bad(prefix + field, why)))
    keys = [(e["layer"], step) for e in entries for step in e["steps"]]
    if len(set(keys)) != len(keys):
        raise bad("header.entries", "name a (layer, step) pair twice")
    return PlanSet(entries, plans)


def _plan_from_arrays(arrays, header, bad):
    """Validate one version-1 plan's header and arrays; return the :class:`BlockPlan`."""
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
