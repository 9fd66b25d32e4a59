"""``paro simulate`` refuses what it cannot run with one line and no report file."""

import json

import numpy as np
import pytest

from paro.cli import main


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans") / "tiny.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "-o", str(path)]) == 0
    return path


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


def test_plan_the_engine_does_not_support(tmp_path, capsys):
    plan = tmp_path / "int8only.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--bitwidths", "0,8", "--density", "0.5",
                 "-o", str(plan)]) == 0
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(plan), "--report", str(report)]) == 2
    assert "the engine computes bitwidths {0, 4, 8}; the plan uses [0, 8]" in _error_line(capsys)
    assert not report.exists()


def test_plan_too_long_for_the_engine(tiny_plan, tmp_path, capsys):
    long_plan, report = tmp_path / "long.npz", tmp_path / "sim.json"
    _rewrite_config(tiny_plan, long_plan, max_seq_len=32768)
    assert main(["simulate", "--plan", str(long_plan), "--report", str(report)]) == 2
    assert "max_seq_len 32768 needs a score buffer too large" in _error_line(capsys)
    assert not report.exists()


def test_head_out_of_range(tiny_plan, tmp_path, capsys):
    report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(tiny_plan), "--head", "9", "--report", str(report)]) == 2
    assert "head 9 out of range: the plan has 4 heads" in _error_line(capsys)
    assert not report.exists()
