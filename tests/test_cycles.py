"""The cycle model (``paro.sw.cycles``, ``paro model``): its cache decisions against the golden model's, its
cycles against the engine RTL on Verilator (exact on these points), its breakdown, and its refusals."""

import json

import numpy as np
import pytest

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.flows.cli import main
from paro.flows.simulate import ideal_cycles, run_layers
from paro.flows.validate import design_point, point_bitmaps, validate_point
from paro.sw import golden
from paro.sw.cycles import BREAKDOWN, Memory, kv_cache_fetches, layer_cycles
from paro.sw.plan import load_plan
from paro.sw.program import random_layer

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


@pytest.mark.parametrize("latency", [0, 9])
def test_model_equals_the_rtl_with_speculation(verilator, latency):
    """Block speculation (``SPEC`` heads) in the model and in the RTL (fast mode, Verilator): a dense head (12
    key blocks, unimportant blocks at 4 bits) whose speculation only the first row waits for, a head of one kept block per row whose
    speculation (one multiplier, 56 key blocks: ~5,300 cycles a row against ~4,300 of compute) is exposed on
    every row, and the same head without speculation, in one start. Cycles per head and in total,
    ``SPEC_BUSY``, ``SPEC_WAIT`` and bytes read are the model's exactly."""
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=32, max_seq_len=1024, axi_data_bits=64,
                               kv_cache_blocks=4, spec_lanes=1)
    n, one = 56, 1 << golden.SPEC_FRAC_BITS
    sparse = np.zeros((n, n), dtype=np.uint8)
    sparse[np.arange(n), (np.arange(n) * 5) % n] = 8
    bitmaps = [np.full((12, 12), 8, dtype=np.uint8), sparse, sparse]
    specs = [(round(0.8 * one), round(0.1 * one), golden.SPEC_LOW_BITS), (one, 0, golden.SPEC_SKIP_ONLY), None]
    layer = random_layer(config, bitmaps, seed=SEED, specs=specs)
    print("seed", SEED, "dense head: speculation skips", int((layer.heads[0].computed_bitmap == 0).sum()), "blocks")
    [(totals, counters)] = run_layers(config, [layer], verilator, gap=0, tag="spec-model", fast=True,
                                      read_latency=latency)
    modelled, heads = layer_cycles(config, [p.computed_bitmap for p in layer.heads],
                                   specs=[s is not None for s in specs], memory=Memory(read_latency=latency))
    got = [(c["CYCLES"], c["SPEC_BUSY"], c["SPEC_WAIT"], c["BYTES_READ"]) for c in counters]
    assert got == [(h.cycles, h.spec_busy, h.spec_wait, h.bytes_read) for h in heads]
    assert totals["CYCLES"] == modelled["cycles"]
    assert heads[1].spec_wait > heads[0].spec_wait > 0 and heads[1].breakdown["speculation"] == heads[1].spec_wait
    assert sum(heads[1].breakdown.values()) == heads[1].cycles


@pytest.mark.parametrize("side, lut_lanes, latency", [(4, 16, 0), (4, 32, 9), (2, 16, 9)])
def test_model_equals_the_rtl_with_lut_path(verilator, side, lut_lanes, latency):
    """SimPicker's LUT path (``SPEC`` 3 heads, a ``lut_path`` build) in the model and in the RTL (fast mode,
    Verilator): a dense head and a mixed 4/8-bit head, both with unimportant blocks on the LUT path, and the
    mixed head without speculation, in one start. Cycles per head and in total, the counters of 4-bit QK^T
    blocks and bytes read are the model's exactly; the LUT path's cycles are in the breakdown."""
    config = AcceleratorConfig(rows=side, cols=side, block_size=16, head_dim=32, max_seq_len=512,
                               axi_data_bits=16 * side * 2, kv_cache_blocks=4, spec_lanes=8, lut_path=True,
                               lut_lanes=lut_lanes)
    one, rng = 1 << golden.SPEC_FRAC_BITS, np.random.default_rng(SEED + side)
    print("seed", SEED + side)
    mixed = np.where(rng.random((10, 10)) < 0.6, np.where(rng.random((10, 10)) < 0.5, 4, 8), 0).astype(np.uint8)
    mixed[np.arange(10), np.arange(10)] = 8
    bitmaps = [np.full((8, 8), 8, dtype=np.uint8), mixed, mixed]
    specs = [(round(0.7 * one), round(0.05 * one), golden.SPEC_LUT_PATH), (round(0.6 * one), 0, golden.SPEC_LUT_PATH),
             None]
    layer = random_layer(config, bitmaps, seed=SEED, specs=specs)
    luts = [int((h.computed_bitmap == golden.LUT_BLOCK).sum()) for h in layer.heads[:2]]
    print("LUT-path blocks", luts)
    assert all(n > 0 for n in luts)
    [(totals, counters)] = run_layers(config, [layer], verilator, gap=0, tag="lut-model", fast=True,
                                      read_latency=latency)
    modelled, heads = layer_cycles(config, [p.computed_bitmap for p in layer.heads],
                                   specs=[s is not None for s in specs], memory=Memory(read_latency=latency))
    got = [(c["CYCLES"], c["KEPT4"], c["SPEC_BUSY"], c["BYTES_READ"]) for c in counters]
    print("RTL", got)
    assert got == [(h.cycles, h.kept4, h.spec_busy, h.bytes_read) for h in heads]
    assert totals["CYCLES"] == modelled["cycles"]
    assert heads[0].breakdown["lut"] > 0 and heads[2].breakdown["lut"] == 0
    for head, prog in zip(heads, layer.heads):
        assert sum(head.breakdown.values()) == head.cycles
        assert head.breakdown["compute"] == ideal_cycles(config, prog.computed_bitmap)


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


def test_model_and_simulate_agree_on_speculation(verilator, tmp_path, capsys):
    """``paro model --method both`` and ``paro simulate --method both --fast`` on a tiny plan of an engine with
    speculation, skipping within the plan (negligible mass 0.3) and lowering unimportant blocks to 4 bits: the
    same cycles, blocks and speculation
    counters; ``--method simpicker`` with the LUT path is refused by both with the same line."""
    plan, model_report, sim_report = tmp_path / "spec.npz", tmp_path / "model.json", tmp_path / "sim.json"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.6", "--spec-lanes", "4",
                 "-o", str(plan)]) == 0
    method = ["--method", "both", "--unimportant", "low", "--reuse-threshold", "0", "--negligible-mass", "0.3"]
    assert main(["model", "--plan", str(plan), "--heads", "0,1", *method, "--report", str(model_report)]) == 0
    assert main(["simulate", "--plan", str(plan), "--heads", "0,1", *method, "--fast", "--report", str(sim_report),
                 "--build-dir", str(tmp_path / "build")]) == 0
    modelled, simulated = json.loads(model_report.read_text()), json.loads(sim_report.read_text())
    keys = ("blocks_8bit", "blocks_4bit", "blocks_skipped", "speculation_busy_cycles", "speculation_wait_cycles")
    for m, s in zip(modelled["per_head"], simulated["per_head"]):
        assert m["cycles"] == s["cycles"] and m["bytes_read"] == s["bytes_read"]
        assert {k: m["counters"][k] for k in keys} == {k: s["counters"][k] for k in keys}
    assert sum(s["counters"]["blocks_skipped_by_speculation"] for s in simulated["per_head"]) > 0
    capsys.readouterr()
    for command in ("model", "simulate"):
        assert main([command, "--plan", str(plan), "--method", "simpicker"]) == 2
        assert "needs an engine built with the LUT path; this plan's has none" in capsys.readouterr().err


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
