"""The cycle model (``paro.sw.cycles``, ``paro model``): its cache decisions against the golden model's, its
cycles against the engine RTL on Verilator (exact on these points), its breakdown, and its refusals."""

import json

import numpy as np
import pytest

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.flows.cli import main
from paro.flows.simulate import ideal_cycles
from paro.flows.validate import design_point, point_bitmaps, validate_point
from paro.sw import golden
from paro.sw.cycles import BREAKDOWN, Memory, kv_cache_fetches, layer_cycles
from paro.sw.plan import load_plan

SEED = 20261128

#: The build of tests/test_engine_bench.py's small fast-mode head: the same config, so one Verilator build.
SMALL = AcceleratorConfig(rows=4, cols=4, block_size=64, head_dim=64, max_seq_len=2048, max_kept_keys=512,
                          kv_cache_blocks=8)


def test_cache_decisions_match_the_golden_cache():
    """Per want, the kinds fetched equal :func:`golden.kv_cache`'s on random want sequences and cache sizes."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    for slots in (1, 2, 3, 5):
        wants = [(str(rng.choice(["K", "V"])), int(rng.integers(0, 9))) for _ in range(300)]
        config = AcceleratorConfig(block_size=16, head_dim=16, max_seq_len=256, kv_cache_blocks=slots)
        expected = [tuple(fetched) for _, fetched in golden.kv_cache(wants, config)]
        assert [fetched for fetched, _ in kv_cache_fetches(wants, slots)] == expected


def test_breakdown_adds_up_and_compute_is_the_ideal():
    rng = np.random.default_rng(SEED + 1)
    point = design_point(rng)
    bitmaps = point_bitmaps(point)
    totals, heads = layer_cycles(point["config"], bitmaps, memory=Memory(read_latency=7))
    for bitmap, head in zip(bitmaps, heads):
        assert set(head.breakdown) == set(BREAKDOWN)
        assert sum(head.breakdown.values()) == head.cycles
        assert head.breakdown["compute"] == ideal_cycles(point["config"], bitmap)
        assert min(head.breakdown.values()) >= 0
    assert totals["cycles"] > sum(h.cycles for h in heads)          # the descriptor check pass


def test_slower_memory_costs_cycles():
    config = AcceleratorConfig(rows=4, cols=4, block_size=16, head_dim=32, max_seq_len=1024, kv_cache_blocks=2)
    bitmap = np.full((6, 6), 8, dtype=np.uint8)
    fast, _ = layer_cycles(config, [bitmap])
    slow, [head] = layer_cycles(config, [bitmap], memory=Memory(read_latency=40, bytes_per_cycle=2))
    assert slow["cycles"] > fast["cycles"] and head.breakdown["kv_fetch"] > 0


def test_model_refuses_what_the_engine_does_not_run():
    config = AcceleratorConfig(block_size=16, head_dim=16, max_seq_len=256, bitwidths=(0, 2, 8))
    with pytest.raises(ParoError, match="the engine computes bitwidths"):
        layer_cycles(config, [np.full((2, 2), 8, dtype=np.uint8)])


@pytest.mark.xdist_group("engine-small-fast")
@pytest.mark.parametrize("latency, clustered", [(0, True), (25, False)])
def test_model_equals_the_rtl(verilator, latency, clustered):
    """Two design points on the small build: random bitmaps with mixed 4/8-bit blocks, two heads per start,
    a K/V cache smaller than the key blocks: the model's cycles equal the RTL's, per head and in total."""
    point = {"config": SMALL, "n_blocks": 10, "heads": 2, "density": 0.3, "four_bit_share": 0.5,
             "clustered": clustered, "read_latency": latency, "seed": SEED + latency}
    print("seed", point["seed"])
    record = validate_point(point)
    assert record["rtl_cycles"] > record["ideal_cycles"] > 0
    assert record["model_cycles"] == record["rtl_cycles"]
    assert [h["model_cycles"] for h in record["per_head"]] == [h["rtl_cycles"] for h in record["per_head"]]
    assert record["model_bytes_read"] == record["rtl_bytes_read"]


def test_model_cli_report(tiny_plan, tmp_path, capsys):
    report = tmp_path / "model.json"
    assert main(["model", "--plan", str(tiny_plan), "--engines", "2", "--read-latency", "10",
                 "--report", str(report)]) == 0
    result = json.loads(report.read_text())
    plan = load_plan(tiny_plan)
    assert result["heads"] == list(range(plan.heads)) and result["engines"] == 2
    assert [e["engine"] for e in result["per_head"]] == [h % 2 for h in range(plan.heads)]
    assert result["cycles"] == max(layer_cycles(plan.config, [plan.bitmap[h] for h in range(e, plan.heads, 2)],
                                                memory=Memory(read_latency=10))[0]["cycles"] for e in (0, 1))
    assert result["dense_int8_cycles"] > result["cycles"] > result["ideal_cycles"] / 2
    assert sum(result["breakdown"].values()) == sum(e["cycles"] for e in result["per_head"])
    assert "cycles (model)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--engines", "0"], "argument --engines: expected a whole number >= 1, got '0'"),
    (["--bytes-per-cycle", "-1"], "argument --bytes-per-cycle: expected a number > 0, got '-1'"),
    (["--heads", "7"], "head 7 out of range: the plan has 4 heads"),
    (["--rows", "2:9"], "query-block rows 2..8 are not within the plan's 6 query blocks"),
])
def test_model_cli_refuses_bad_input(tiny_plan, tmp_path, capsys, args, message):
    report = tmp_path / "model.json"
    assert main(["model", "--plan", str(tiny_plan), "--report", str(report), *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert len(err) == 1 and message in err[0]
    assert not report.exists()
