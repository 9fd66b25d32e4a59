"""BlockPlan files: a round trip, and every malformed case refused with one line naming the field."""

import json

import numpy as np
import pytest

from paro.errors import ParoError
from paro.sw.calibrate import calibrate
from paro.sw.plan import PlanSet, load_plan, load_plan_set, save_plan, save_plan_set
from paro.sw.workloads import make_workload
from paro.config import AcceleratorConfig


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    workload = make_workload("tiny")
    plan, _ = calibrate(workload, AcceleratorConfig(head_dim=32, block_size=16), density=0.5, avg_bits=3.0,
                        log=lambda m: None)
    path = tmp_path_factory.mktemp("plan") / "plan.npz"
    save_plan(plan, path)
    return path, plan


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    np.savez(dst, **arrays)


def _header(arrays):
    return json.loads(arrays["header"].tobytes().decode())


def _set_header(arrays, header):
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def test_round_trip(plan_file):
    path, plan = plan_file
    loaded = load_plan(path)
    assert loaded.orders == plan.orders
    assert np.array_equal(loaded.bitmap, plan.bitmap)
    assert loaded.config == plan.config and loaded.layout == plan.layout
    assert np.array_equal(loaded.k_scale, plan.k_scale)


def _bad_version(a):
    h = _header(a); h["version"] = 7; _set_header(a, h)


def _bad_format(a):
    h = _header(a); h["format"] = "other"; _set_header(a, h)


def _no_layout(a):
    h = _header(a); del h["layout"]; _set_header(a, h)


def _bad_config(a):
    h = _header(a); h["config"]["rows"] = 3; _set_header(a, h)


def _bitwidth_2(a):
    a["bitmap"] = a["bitmap"].copy(); a["bitmap"][0, 0, 0] = 2


def _empty_row(a):
    a["bitmap"] = a["bitmap"].copy(); a["bitmap"][0, 1, :] = 0


def _header_change(path, value):
    """A change that sets header[path[0]][path[1]]... to value (deletes it for ``...``)."""
    def change(a):
        h = _header(a)
        target = h
        for key in path[:-1]:
            target = target[key]
        if value is ...:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        _set_header(a, h)
    return change


CASES = [
    ("source not an object", _header_change(["source"], "tiny"), "field 'header.source' must be a JSON object"),
    ("source kind", _header_change(["source", "kind"], "url"), "field 'header.source.kind' must be 'synthetic'"),
    ("source name", _header_change(["source", "name"], ...), "field 'header.source.name' must be one of"),
    ("source seed", _header_change(["source", "seed"], "zero"), "field 'header.source.seed' must be an integer"),
    ("source heads", _header_change(["source", "heads"], 9), "field 'header.source.heads' must equal header.heads"),
    ("source layout", _header_change(["source", "layout"], None), "field 'header.source.layout' must equal"),
    ("source file without sha", lambda a: _header_change(["source"], {"kind": "file", "path": "x.npz", "layout":
                                                         _header(a)["layout"]})(a),
     "field 'header.source.sha256' must be 64 lowercase hex digits"),
    ("budget not an object", _header_change(["budget"], None), "field 'header.budget' must be a JSON object"),
    ("budget value", _header_change(["budget", "avg_bits"], "high"), "field 'header.budget.avg_bits' must be a"),
    ("budget key missing", _header_change(["budget", "eval_density"], ...), "field 'header.budget.eval_density' is"),
    ("wrong dtype", lambda a: a.update(bitmap=a["bitmap"].astype(np.int32)), "field 'bitmap' must have dtype uint8"),
    ("wrong shape", lambda a: a.update(q_scale=a["q_scale"][:, :-1]), "field 'q_scale' must have shape"),
    ("bitwidth not in set", _bitwidth_2, "field 'bitmap' has bitwidth 2 not in the plan's set [0, 4, 8]"),
    ("missing field", lambda a: a.pop("k_scale"), "field 'k_scale' is missing"),
    ("bad version", _bad_version, "field 'header.version' must be 1 (one plan) or 2 (a plan set), got 7"),
    ("set without entries", _header_change(["version"], 2), "field 'header.entries' must be a non-empty list"),
    ("bad format", _bad_format, "field 'header.format' must be 'paro-blockplan'"),
    ("missing header field", _no_layout, "field 'header.layout' is missing"),
    ("invalid config", _bad_config, "field 'header.config' is invalid: rows must be a power of two"),
    ("nan scale", lambda a: a.update(v_scale=a["v_scale"] * np.nan), "field 'v_scale' contains NaN"),
    ("negative scale", lambda a: a.update(k_scale=-a["k_scale"]), "field 'k_scale' must be positive"),
    ("query row without blocks", _empty_row, "head 0 query block 1 keeps no key block"),
    ("bad order", lambda a: a.update(orders=a["orders"] + 6), "field 'orders' must index the 6 permutations"),
    ("header not json", lambda a: a.update(header=np.frombuffer(b"{oops", dtype=np.uint8)),
     "field 'header' is not UTF-8 JSON"),
    ("header missing", lambda a: a.pop("header"), "field 'header' is missing"),
]


@pytest.mark.parametrize("name,change,message", CASES, ids=[c[0] for c in CASES])
def test_malformed_plan_is_refused(plan_file, tmp_path, name, change, message):
    src, _ = plan_file
    dst = tmp_path / "bad.npz"
    _rewrite(src, dst, change)
    with pytest.raises(ParoError) as info:
        load_plan(dst)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_and_foreign_files(plan_file, tmp_path):
    src, _ = plan_file
    data = src.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParoError, match="is not a valid .npz \\(truncated or corrupt"):
        load_plan(truncated)
    text = tmp_path / "text.npz"
    text.write_text("not a plan")
    with pytest.raises(ParoError, match="is not a valid .npz"):
        load_plan(text)
    with pytest.raises(ParoError, match="does not exist"):
        load_plan(tmp_path / "missing.npz")


def test_pickled_object_arrays_are_refused(plan_file, tmp_path):
    src, _ = plan_file
    dst = tmp_path / "pickled.npz"
    _rewrite(src, dst, lambda a: a.update(orders=np.array([object()] * len(a["orders"]), dtype=object)))
    with pytest.raises(ParoError, match="is not a valid .npz"):
        load_plan(dst)


def _plan_set(plan):
    entries = [{"layer": layer, "group": group, "steps": steps}
               for layer in (0, 3) for group, steps in enumerate(([0, 1, 2], [3, 4]))]
    plans = []
    for n in range(len(entries)):     # plans that differ: head 0's kept blocks at 4 or 8 bits, head 1 dense or not
        bitmap = plan.bitmap.copy()
        bitmap[0] = np.where(bitmap[0] > 0, (4, 8)[n % 2], 0)
        if n >= 2:
            bitmap[1] = 8
        plans.append(type(plan)(**{**plan.__dict__, "bitmap": bitmap}))
    return PlanSet(entries, plans)


def test_plan_set_round_trip_and_selection(plan_file, tmp_path):
    _, plan = plan_file
    plan_set = _plan_set(plan)
    path = tmp_path / "set.npz"
    save_plan_set(plan_set, path)
    loaded = load_plan_set(path)
    assert loaded.entries == plan_set.entries and len(loaded.plans) == 4
    for n, entry in enumerate(plan_set.entries):
        chosen = load_plan(path, layer=entry["layer"], step=entry["steps"][-1])
        assert np.array_equal(chosen.bitmap, plan_set.plans[n].bitmap) and chosen.orders == plan.orders
    with pytest.raises(ParoError, match=r"holds 4 plans \(layers 0, 3; step groups 0-2, 3-4\); pass --layer and --step"):
        load_plan(path)
    with pytest.raises(ParoError, match="has no plan for layer 1 at step 0"):
        load_plan(path, layer=1, step=0)
    with pytest.raises(ParoError, match="holds 4 plans"):
        load_plan(path, layer=3)
    # A version-1 file is a set of one plan, with no layer or steps.
    single = load_plan_set(plan_file[0])
    assert single.entries == [{"layer": None, "group": None, "steps": None}]
    assert np.array_equal(load_plan(plan_file[0]).bitmap, plan.bitmap)


SET_CASES = [
    ("entry not an object", lambda a: _set_header(a, {**_header(a), "entries": [5] + _header(a)["entries"][1:]}),
     "field 'header.entries[0]' must hold an integer layer and group"),
    ("repeated step", lambda a: _set_header(a, {**_header(a), "entries": _header(a)["entries"][:1] * 2 +
                                                _header(a)["entries"][2:]}),
     "field 'header.entries' name a (layer, step) pair twice"),
    ("entry array missing", lambda a: a.pop("entry2.k_scale"), "field 'entry2.k_scale' is missing"),
    ("entry bitmap bad", lambda a: a.update({"entry1.bitmap": a["entry1.bitmap"].astype(np.int32)}),
     "field 'entry1.bitmap' must have dtype uint8"),
    ("entry header missing", lambda a: a.pop("entry3.header"), "field 'entry3.header' is missing"),
]


@pytest.mark.parametrize("name,change,message", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_malformed_plan_set_is_refused(plan_file, tmp_path, name, change, message):
    src = tmp_path / "set.npz"
    save_plan_set(_plan_set(plan_file[1]), src)
    dst = tmp_path / "bad.npz"
    _rewrite(src, dst, change)
    with pytest.raises(ParoError) as info:
        load_plan_set(dst)
    assert message in str(info.value) and "\n" not in str(info.value)
