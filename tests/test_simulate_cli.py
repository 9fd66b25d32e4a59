"""``paro simulate`` refuses what it cannot run with one line and no report file."""

import json

import numpy as np
import pytest

from paro.flows.cli import main
from paro.sw import golden
from paro.sw.plan import load_plan
from paro.sw.program import engine_layer


def _error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert len(lines) == 1
    return lines[0]


def _rewrite_config(src, dst, **changes):
    with np.load(src, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header["config"].update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)


def test_unknown_simulator(tiny_plan, tmp_path, capsys):
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(tiny_plan), "--simulator", "modelsim", "--report", str(report)]) == 2
    assert "unknown simulator 'modelsim'; choose one of icarus, verilator" in _error_line(capsys)
    assert not report.exists()


def test_malformed_plan(tmp_path, capsys):
    bad, report = tmp_path / "bad.npz", tmp_path / "sim.json"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["simulate", "--plan", str(bad), "--report", str(report)]) == 2
    assert "is not a valid .npz" in _error_line(capsys)
    assert not report.exists()


def test_two_bit_plan_calibrates_and_models(tmp_path):
    """calibrate with {0, 2, 4, 8} (output error metric) uses 2-bit blocks at a tight budget, and the cycle model runs the plan and
    counts them (the RTL runs such heads in tests/test_engine_bench.py)."""
    plan, calibration, model = tmp_path / "two.npz", tmp_path / "cal.json", tmp_path / "model.json"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--bitwidths", "0,2,4,8",
                 "--avg-bits", "1", "--error-metric", "output", "-o", str(plan), "--report", str(calibration)]) == 0
    report = json.loads(calibration.read_text())
    assert sum(h["blocks_by_bits"]["2"] for h in report["heads"]) > 0 and report["avg_bits"] <= 1 + 1e-9
    assert report["error_metric"] == "output"
    assert main(["model", "--plan", str(plan), "--report", str(model)]) == 0
    bitmap = load_plan(plan).bitmap
    heads = json.loads(model.read_text())["per_head"]
    assert [h["counters"]["blocks_2bit"] for h in heads] == [int((b == 2).sum()) for b in bitmap]


def test_plan_the_engine_does_not_support(tmp_path, capsys):
    plan = tmp_path / "int8only.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--bitwidths", "0,8", "--density", "0.5",
                 "-o", str(plan)]) == 0
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(plan), "--report", str(report)]) == 2
    assert ("the engine computes bitwidths {0, 4, 8} or {0, 2, 4, 8} (a 2-bit block's V multiplier comes from the "
            "4-bit one); the configuration uses [0, 8]") in _error_line(capsys)
    assert not report.exists()


def test_more_heads_than_one_start_runs(tiny_plan, tmp_path, capsys):
    few, report = tmp_path / "few.npz", tmp_path / "sim.json"
    _rewrite_config(tiny_plan, few, max_heads=2)
    assert main(["simulate", "--plan", str(few), "--heads", "all", "--report", str(report)]) == 2
    assert ("plan cannot run on the engine built for this plan: a layer of 4 heads does not fit one start: "
            "N_HEADS must be in [1, 2] (build with --max-heads >= 4)") in _error_line(capsys)
    assert not report.exists()


def test_head_out_of_range(tiny_plan, tmp_path, capsys):
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(tiny_plan), "--head", "9", "--report", str(report)]) == 2
    assert "head 9 out of range: the plan has 4 heads" in _error_line(capsys)
    assert not report.exists()


def test_rows_beyond_the_head(tiny_plan, tmp_path, capsys):
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(tiny_plan), "--rows", "5:9", "--report", str(report)]) == 2
    assert "query-block rows 5..8 are not within the head's 6 query blocks" in _error_line(capsys)
    assert not report.exists()


def test_plan_longer_than_the_engine_build(tiny_plan, tmp_path, capsys):
    """The descriptor's N_BLOCKS is checked against the build before anything runs (it used to drop high bits)."""
    short, report = tmp_path / "short.npz", tmp_path / "sim.json"
    _rewrite_config(tiny_plan, short, max_seq_len=64, max_kept_keys=64)   # tiny needs 6 blocks of 16: 96 > 64
    assert main(["simulate", "--plan", str(short), "--report", str(report)]) == 2
    line = _error_line(capsys)
    assert "head 0: descriptor N_BLOCKS = 6 is outside [1, 4] (this engine: max_seq_len 64 / block_size 16)" in line
    assert "--max-seq-len >= 96" in line
    assert not report.exists()


def test_row_beyond_the_score_buffer(tiny_plan, tmp_path, capsys):
    """A query-block row that keeps more keys than the build's score buffer (max_kept_keys) is named."""
    small, report = tmp_path / "small_buffer.npz", tmp_path / "sim.json"
    _rewrite_config(tiny_plan, small, max_kept_keys=32)
    kept = np.count_nonzero(load_plan(tiny_plan).bitmap[0], axis=1)
    row = int(np.flatnonzero(kept > 2)[0])
    assert main(["simulate", "--plan", str(small), "--report", str(report)]) == 2
    assert (f"plan cannot run on the engine built for this plan: head 0: bitmap row {row} keeps {kept[row]} "
            f"blocks ({16 * kept[row]} keys), more than the score buffer holds (max_kept_keys 32); build with "
            f"--max-kept-keys >= {16 * kept.max()}") in _error_line(capsys)
    assert not report.exists()


def test_calibrate_refuses_a_plan_beyond_the_score_buffer(tmp_path, capsys):
    plan = tmp_path / "plan.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5",
                 "--max-kept-keys", "16", "-o", str(plan)]) == 2
    line = _error_line(capsys)
    assert line.startswith("paro: error: head 0: bitmap row ") and "(max_kept_keys 16)" in line
    assert line.endswith(", or lower --density")
    assert not plan.exists()


def test_bad_plan_source_is_one_line(tiny_plan, tmp_path, capsys):
    bad, report = tmp_path / "bad.npz", tmp_path / "sim.json"
    with np.load(tiny_plan, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header["source"]["kind"] = None
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(bad, **arrays)
    assert main(["simulate", "--plan", str(bad), "--report", str(report)]) == 2
    assert "field 'header.source.kind' must be 'synthetic' or 'file', got None" in _error_line(capsys)
    assert not report.exists()


def test_changed_qkv_file_is_refused(tmp_path, capsys):
    """A plan records its Q/K/V file's SHA-256; simulating after the file changed is refused."""
    rng = np.random.default_rng(7)
    qkv, plan, report = tmp_path / "qkv.npz", tmp_path / "plan.npz", tmp_path / "sim.json"
    shape = (1, 4 + 2 * 4 * 4, 32)
    np.savez(qkv, q=rng.standard_normal(shape), k=rng.standard_normal(shape), v=rng.standard_normal(shape))
    assert main(["calibrate", "--qkv", str(qkv), "--grid", "2,4,4", "--text-tokens", "4", "--block-size", "16",
                 "--density", "0.6", "-o", str(plan)]) == 0
    np.savez(qkv, q=rng.standard_normal(shape), k=rng.standard_normal(shape), v=rng.standard_normal(shape))
    assert main(["simulate", "--plan", str(plan), "--report", str(report)]) == 2
    assert f"Q/K/V file {str(qkv.resolve())!r} changed since the plan was calibrated" in _error_line(capsys)
    assert not report.exists()
    qkv.unlink()
    assert main(["simulate", "--plan", str(plan), "--report", str(report)]) == 2
    assert "does not exist (the plan was calibrated on it)" in _error_line(capsys)


@pytest.mark.parametrize("command", ["simulate", "calibrate"])
def test_output_path_that_cannot_be_written(tiny_plan, tmp_path, capsys, command):
    """A folder as output, or a path under a file, is one line before any work (it used to be an OSError)."""
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("a file, not a folder")
    if command == "simulate":
        argv = ["simulate", "--plan", str(tiny_plan), "--report"]
    else:
        argv = ["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "-o"]
    assert main([*argv, str(tmp_path)]) == 2
    assert f"output path {str(tmp_path)!r} is a folder; give a file name" in _error_line(capsys)
    assert main([*argv, str(blocker / "out.json")]) == 2
    assert f"output folder {str(blocker)!r} is not a folder" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker.txt"]


@pytest.mark.xdist_group("engine-tiny-verilator")       # shares the tiny engine build with the engine benches
def test_simulate_success_report(tiny_plan, tmp_path, capsys, verilator):
    """The success path: a bit-exact head, its dense INT8 baseline from the same invocation, ideal cycles
    recomputed here from the bitmap, counters equal to the bitmap's block counts."""
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(tiny_plan), "--head", "1", "--report", str(report)]) == 0
    result = json.loads(report.read_text())
    plan = load_plan(tiny_plan)
    config, bitmap = plan.config, plan.bitmap[1]
    macs = 2 * config.block_size ** 2 * config.head_dim
    peak = config.rows * config.cols
    assert result["ideal_cycles"] == (bitmap == 8).sum() * macs // peak + (bitmap == 4).sum() * macs // (2 * peak)
    assert result["dense_int8_ideal_cycles"] == bitmap.size * macs // peak
    [entry] = result["per_head"]
    assert result["bit_exact"] is True and result["heads"] == [1] and entry["head"] == 1
    assert entry["order"] == plan.orders[1] and entry["cycles"] < result["cycles"]     # + the descriptor check
    assert result["ideal_cycles"] < entry["cycles"] < result["dense_int8_cycles"]
    assert result["utilization"] == pytest.approx(result["ideal_cycles"] / result["cycles"])
    assert result["speedup_vs_dense_int8"] == pytest.approx(result["dense_int8_cycles"] / result["cycles"])
    counters = entry["counters"]
    assert (counters["blocks_8bit"], counters["blocks_4bit"], counters["blocks_skipped"]) == (
        (bitmap == 8).sum(), (bitmap == 4).sum(), (bitmap == 0).sum())
    assert counters["stall_cycles"] == entry["cycles"] - counters["array_beats"]
    assert entry["dense_counters"]["KEPT8"] == bitmap.size and result["config"] == config.to_dict()
    # Memory traffic through the 3-slot K/V cache: the descriptor (twice: check pass and run) and block table,
    # Q and the bitmap row once per query block, K and V whenever the cache misses (golden.fetcher); the dense
    # run cycles through 6 blocks a row with 3 slots (LRU thrashes: every K and V want misses), so it reads
    # far more than Q, K and V once.
    tokens_bytes = bitmap.shape[0] * config.block_size * config.head_dim
    footprint, [head_footprint] = golden.layer_reads(engine_layer(plan, [1]), config)
    dense, _ = golden.layer_reads(engine_layer(plan, [1], dense=True), config)
    assert config.kv_cache_blocks == 3 and result["bytes_read"] == footprint and entry["bytes_read"] == head_footprint
    assert result["dense_int8_bytes_read"] == dense > 3 * tokens_bytes
    assert result["bytes_written"] == 2 * tokens_bytes
    out = capsys.readouterr().out
    assert f"head 1 ({plan.orders[1]}): bit_exact True, {entry['cycles']} cycles" in out
    assert "1 head(s) in one start, query blocks 0..5 on verilator (cocotb mode): bit_exact True" in out


@pytest.mark.xdist_group("engine-tiny-verilator")
def test_simulate_heads_and_rows(tiny_plan, tmp_path, verilator):
    """Two heads in one start, query blocks 2..4 only: each head's codes of those blocks bit-exact, counters
    and ideal cycles of those rows; the layer's totals cover both heads and the descriptor checks."""
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(tiny_plan), "--heads", "0,2", "--rows", "2:5", "--report", str(report)]) == 0
    result = json.loads(report.read_text())
    plan = load_plan(tiny_plan)
    B, d = plan.config.block_size, plan.config.head_dim
    assert result["heads"] == [0, 2] and result["query_blocks"] == [2, 4] and result["bit_exact"] is True
    for entry, head in zip(result["per_head"], (0, 2)):
        rows = plan.bitmap[head][2:5]
        assert entry["head"] == head and entry["bytes_written"] == 3 * B * d * 2
        counters = entry["counters"]
        assert (counters["blocks_8bit"], counters["blocks_4bit"]) == ((rows == 8).sum(), (rows == 4).sum())
        macs = 2 * B * B * d
        assert entry["ideal_cycles"] == ((rows == 8).sum() * macs // 16 + (rows == 4).sum() * macs // 32)
    for key in ("ideal_cycles", "dense_int8_ideal_cycles"):
        assert result[key] == sum(entry[key] for entry in result["per_head"])
    for key in ("cycles", "bytes_read", "dense_int8_cycles", "dense_int8_bytes_read"):
        assert result[key] > sum(entry[key] for entry in result["per_head"])
    assert result["bytes_read"] == golden.layer_reads(engine_layer(plan, [0, 2], rows=range(2, 5)), plan.config)[0]


@pytest.mark.parametrize("argv,message", [
    (["simulate", "--plan", "p.npz", "--rows", "5"], "paro: error: argument --rows: --rows must be FIRST:STOP"),
    (["calibrate", "--grid", "1,2", "-o", "x.npz"], "paro: error: argument --grid: --grid must be F,H,W"),
    (["simulate", "--plan", "p.npz", "--gap", "lots"], "paro: error: argument --gap: invalid float value: 'lots'"),
    (["bogus"], "paro: error: argument command: invalid choice: 'bogus'"),
])
def test_malformed_command_line_is_one_line(tmp_path, capsys, argv, message):
    """argparse's usage block is not printed: one line naming the argument and where help is, exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "--help`)" in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_bench_is_refused_without_a_file(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "precisoin", "-o", str(out)]) == 2
    assert _error_line(capsys) == ("paro: error: unknown bench 'precisoin'; choose one of: array, calibration-speed, "
                                   "engine-speed, model-validation, precision, simpicker, simpicker-rtl")
    assert not out.exists()
