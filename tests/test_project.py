"""paro project: the work split, the projection's arithmetic on a tiny stand-in model, and its refusals."""

import json

import numpy as np
import pytest

from paro.flows import project as projection
from paro.flows.cli import main
from paro.sw.cycles import Memory, layer_cycles
from paro.sw.plan import load_plan

SEED = 20261128


@pytest.mark.parametrize("engines", [1, 5, 37, 500])
def test_split_rows_covers_every_query_block_once_in_balanced_pieces(engines):
    rng = np.random.default_rng(SEED + engines)
    costs = [rng.integers(1, 1000, n) for n in (17, 40, 3)]
    pieces = projection.split_rows(costs, engines)
    assert 1 <= len(pieces) <= engines
    seen = [(h, r) for tasks in pieces for h, rows in tasks for r in rows]
    assert seen == [(h, r) for h, c in enumerate(costs) for r in range(len(c))], f"seed {SEED + engines}"
    loads = [sum(costs[h][r] for h, rows in tasks for r in rows) for tasks in pieces]
    total, biggest = sum(int(c.sum()) for c in costs), max(int(c.max()) for c in costs)
    assert max(loads) <= total / min(engines, sum(map(len, costs))) + biggest


@pytest.fixture
def tiny_model(tiny_plan, monkeypatch):
    """The tiny plan's 4 heads posing as a 5-head model (the projection needs a plan of the model's tokens)."""
    plan = load_plan(tiny_plan)
    tokens = plan.layout.tokens
    monkeypatch.setitem(projection.MODELS, "tiny-test", {"heads": 5, "tokens": tokens, "head_dim": plan.config.head_dim})
    return plan


def _project(tiny_plan, tmp_path, name, *extra):
    report = tmp_path / f"{name}.json"
    # 3 engines of 4x4 at 1 GHz: 3 x 2 x 16 x 1e9 ops/s
    args = ["project", "--model", "tiny-test", "--plan", str(tiny_plan), "--rows", "4", "--cols", "4",
            "--frequency-ghz", "1", "--peak-tops", str(3 * 2 * 16 * 1e9 / 1e12), "--kv-cache-blocks", "2",
            "--bandwidth-tbs", "0.004", "--report", str(report), *extra]
    assert main(args) == 0
    assert report.with_suffix(".png").is_file()
    return json.loads(report.read_text())


def test_project_on_a_tiny_model(tiny_model, tiny_plan, tmp_path, capsys):
    equal = _project(tiny_plan, tmp_path, "equal", "--sharing", "equal")
    demand = _project(tiny_plan, tmp_path, "demand")
    out = capsys.readouterr().out
    assert "tiny-test attention layer (5 heads" in out and "GPU (NVIDIA H100" in out
    for r in (equal, demand):
        assert r["engines"] == 3 and r["pes"] == 48 and r["heads"] == 5 and r["plan_heads_reused"] is True
        assert r["layer_ms"] == pytest.approx(r["layer_cycles"] / 1e6)
        assert r["layer_ms"] >= r["ideal_ms"] > 0
        gpu, e2e = r["gpu"], r["end_to_end"]
        assert gpu["dense_ms"] == pytest.approx(9.06 * 5 / 48)
        assert r["speedup_vs_gpu_block_sparse"] == pytest.approx(gpu["block_sparse_ms_at_density"] / r["layer_ms"])
        other = gpu["dense_ms"] / 3                                   # (1 - 0.75) / 0.75
        assert e2e["speedup_vs_gpu_dense"] == pytest.approx((gpu["dense_ms"] + other) / (r["layer_ms"] + other))
        assert sum(r["breakdown_share"].values()) == pytest.approx(1)
        assert sum(r["losses_ms"].values()) == pytest.approx(r["layer_ms"] - r["ideal_ms"])
    # 4 GB/s at 1 GHz: 4 bytes a cycle in all; the static split gives each engine a third of it
    assert equal["memory"]["engine_bytes_per_cycle"] == pytest.approx(4 / 3)
    assert demand["memory"]["engine_bytes_per_cycle"] >= 4 / 3
    assert demand["layer_cycles"] - demand["startup_cycles"] <= equal["layer_cycles"]
    # the equal split's cycles are the slowest piece's start, modelled directly
    plan, config = tiny_model, equal["config"]
    bitmaps = [plan.bitmap[h % plan.heads] for h in range(5)]
    costs = [np.array(layer_cycles(projection.AcceleratorConfig.from_dict(config), [b],
                                   memory=Memory(0, 4 / 3))[1][0].row_cycles) for b in bitmaps]
    slowest = max(layer_cycles(projection.AcceleratorConfig.from_dict(config), [bitmaps[h] for h, _ in tasks],
                               rows=[r for _, r in tasks], memory=Memory(0, 4 / 3))[0]["cycles"]
                  for tasks in projection.split_rows(costs, 3))
    assert equal["layer_cycles"] == slowest


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt-2"], "unknown model 'gpt-2'"),
    (["--sharing", "fair"], "unknown --sharing 'fair'"),
    (["--kept-bits", "9"], "--kept-bits must be in [4, 8]"),
    (["--peak-tops", "0"], "--peak-tops must be > 0"),
    (["--attention-share", "1.5"], "--attention-share must be in (0, 1)"),
    (["--plan", "TINY"], "needs 17776 tokens"),
])
def test_project_refuses_bad_input(tiny_plan, tmp_path, capsys, args, message):
    report = tmp_path / "r.json"
    args = [str(tiny_plan) if a == "TINY" else a for a in args]
    assert main(["project", *args, "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paro: error: ") and message in err and "\n" not in err
    assert not report.exists() and not report.with_suffix(".png").exists()
