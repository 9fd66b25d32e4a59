"""paro formal: the fast block properties proved in the default suite (make formal runs every check), and a
check that fails when the design breaks its property."""

import json

import pytest

from paro.flows import formal as flow
from paro.flows.cli import main
from paro.hw import scheduler
from paro.hw.formal import stream_held


def test_fast_properties_are_proved(tmp_path, capsys):
    report = tmp_path / "formal.json"
    assert main(["formal", "--only", "scheduler,scheduler_bounds,output_stage", "--report", str(report),
                 "--build-dir", str(tmp_path)]) == 0
    result = json.loads(report.read_text())
    assert result["passed"] and [c["status"] for c in result["checks"]] == ["PASS"] * 3
    assert [c["method"] for c in result["checks"]] == ["prove", "bmc", "prove"]
    assert "scheduler: PASS (k-induction, depth 12" in capsys.readouterr().out


class _Overwrites(scheduler.BlockScheduler):
    """A broken scheduler: its output register takes the next kept block even while the current one waits."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.sync += self.o.payload.j.eq(self.o.payload.j + 1)     # the waiting beat changes under the consumer
        return m


def test_a_broken_stream_is_caught(tmp_path, monkeypatch, capsys):
    block, _, config, _, _, what = flow.CHECKS["scheduler"]
    monkeypatch.setitem(flow.CHECKS, "broken", (_Overwrites, lambda m, dut: stream_held(m, dut.o, "o"), config,
                                                "prove", 6, what))
    assert main(["formal", "--only", "broken", "--build-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "broken: FAIL" in captured.out and "failed: " in captured.out and "hw/formal.py" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("paro: error: 1 formal check(s) did not pass")


def test_unknown_check_is_refused(capsys):
    assert main(["formal", "--only", "everything"]) == 2
    assert "unknown check 'everything'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(flow.CHECKS))
def test_every_check_names_its_method(name):
    _, _, _, method, depth, what = flow.CHECKS[name]
    assert method in ("prove", "bmc") and depth >= 4 and what

