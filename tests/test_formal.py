"""paro formal: the fast block properties proved in the default suite (make formal runs every check), and a
check that fails when the design breaks its property."""

import json

import pytest

from paro.flows import formal as flow
from paro.flows.cli import main
from paro.hw import array, scheduler
from paro.hw.formal import stream_held


def test_fast_properties_are_proved(tmp_path, capsys):
    report = tmp_path / "formal.json"
    assert main(["formal", "--only", "scheduler,array,output_stage,registers", "--report", str(report),
                 "--build-dir", str(tmp_path)]) == 0
    result = json.loads(report.read_text())
    assert result["passed"] and [c["status"] for c in result["checks"]] == ["PASS"] * 4
    assert [c["method"] for c in result["checks"]] == ["prove"] * 4
    assert "scheduler: PASS (k-induction, depth 12" in capsys.readouterr().out


def test_simpicker_units_keep_the_stream_rules(tmp_path):
    report = tmp_path / "formal.json"
    names = ["lut_multiplier", "pooling", "reuse_check", "row_packer"]
    assert main(["formal", "--only", ",".join(names), "--report", str(report), "--build-dir", str(tmp_path)]) == 0
    checks = json.loads(report.read_text())["checks"]
    assert [(c["name"], c["status"], c["method"]) for c in checks] == [(n, "PASS", "prove") for n in names]


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
    assert method in ("prove", "bmc") and depth >= 1 and what



class _TakesAAlone(array.SystolicArray):
    """A broken array: it takes an ``a`` beat whether or not ``b`` has one (the join is gone)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.a.ready.eq(~(self.a.payload.last & self.c.valid))
        return m


class _DropsBlockOne(scheduler.BlockScheduler):
    """A broken scheduler: it never offers block 1 (the beat is loaded, then withdrawn)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(self.o.valid & ~self.o.payload.end & (self.o.payload.j == 1)):
            m.d.sync += self.o.valid.eq(0)
        return m


@pytest.mark.parametrize("name, broken, depth", [("array", _TakesAAlone, 4), ("scheduler_bounds", _DropsBlockOne, 8)])
def test_broken_blocks_fail_their_checks(tmp_path, monkeypatch, name, broken, depth):
    """The array check sees beats taken without their ``b``; the scheduler's walk check sees a kept block that
    never comes out."""
    _, properties, config, method, _, what = flow.CHECKS[name]
    monkeypatch.setitem(flow.CHECKS, name, (broken, properties, config, method, depth, what))
    result = flow.formal([name], build_dir=tmp_path)
    assert result["checks"][0]["status"] == "FAIL" and not result["passed"]
