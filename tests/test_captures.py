"""Calibration from a folder of per-step, per-layer Q/K/V captures into a plan set (sw/captures.py, CLI)."""

import json

import numpy as np
import pytest

from paro.errors import ParoError
from paro.flows.cli import main
from paro.sw.captures import capture_name, find_captures, step_groups
from paro.sw.plan import load_plan, load_plan_set
from paro.sw.workloads import make_workload

STEPS, LAYERS = (0, 1, 2, 3, 4), (0, 1)
TINY = ["--grid", "2,4,8", "--text-tokens", "32", "--block-size", "16"]


def write_captures(folder, steps=STEPS, layers=LAYERS):
    """Per step another sample (photograph) of the tiny workload, per layer other head weights (seed)."""
    folder.mkdir(exist_ok=True)
    for step in steps:
        for layer in layers:
            workload = make_workload("tiny", seed=layer, sample=step % 4)
            q, k, v = (np.stack(x) for x in zip(*(workload.head(h) for h in range(workload.heads))))
            np.savez(folder / capture_name(step, layer), q=q, k=k, v=v)
    return folder


def test_step_groups_split_runs():
    assert step_groups([4, 0, 1, 2, 3], 2) == [[0, 1, 2], [3, 4]]
    assert step_groups([0, 10, 20], 3) == [[0], [10], [20]]
    with pytest.raises(ParoError, match=r"--step-groups must be in \[1, 3\] for 3 captured steps, got 4"):
        step_groups([0, 1, 2], 4)


def test_calibrate_captures_into_a_plan_set(tmp_path, capsys):
    folder = write_captures(tmp_path / "captures")
    plan_path, report_path = tmp_path / "set.npz", tmp_path / "set.json"
    assert main(["calibrate", "--captures", str(folder), *TINY, "--density", "0.5", "--avg-bits", "3",
                 "--step-groups", "2", "-o", str(plan_path), "--report", str(report_path)]) == 0
    plan_set = load_plan_set(plan_path)
    assert [(e["layer"], e["steps"]) for e in plan_set.entries] == [
        (0, [0, 1, 2]), (0, [3, 4]), (1, [0, 1, 2]), (1, [3, 4])]
    report = json.loads(report_path.read_text())
    for entry in report["entries"]:
        others = [s for s in entry["steps"] if s != entry["calibrated_on_step"]]
        assert entry["calibrated_on_step"] == entry["steps"][len(entry["steps"]) // 2]
        assert [h["step"] for h in entry["heldout"]] == others
        assert all(0.5 < h["cosine"] < 1 for h in entry["heldout"]) and 0.9 < entry["cosine"] <= 1
    assert report["cosine_min"] == min([e["cosine"] for e in report["entries"]] +
                                       [h["cosine"] for e in report["entries"] for h in e["heldout"]])
    # Each plan was calibrated on its group's middle step of its layer, and simulate would run that file.
    plan = load_plan(plan_path, layer=1, step=4)
    assert plan.source["path"].endswith(capture_name(4, 1))
    assert load_plan(plan_path, layer=0, step=0).source["path"].endswith(capture_name(1, 0))
    layers = {entry["layer"]: plan_set.plans[n] for n, entry in enumerate(plan_set.entries) if entry["group"] == 0}
    assert not np.array_equal(layers[0].bitmap, layers[1].bitmap), "other weights, other plans"
    assert "layer 1, steps 3..4" in capsys.readouterr().out
    # simulate and plot pick one plan of the set, and say what to pass when it is not named.
    sim_report = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(plan_path), "--report", str(sim_report)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert len(errors) == 1 and "holds 4 plans (layers 0, 1; step groups 0-2, 3-4); pass --layer and --step" in errors[0]
    assert not sim_report.exists()
    assert main(["plot", str(plan_path), "--layer", "0", "--step", "3", "--head", "0", "-o", str(tmp_path / "p")]) == 0
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["head0.png", "overview.png"]


def test_capture_folder_problems_are_one_line(tmp_path, capsys):
    folder = write_captures(tmp_path / "captures", steps=(0, 1), layers=(0, 1))
    (folder / capture_name(1, 1)).unlink()
    with pytest.raises(ParoError, match=r"has no step0001_layer001.npz \(1 of 4 step/layer files missing\)"):
        find_captures(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "set.npz"
    for argv, message in [
        (["--captures", str(empty), *TINY, "--density", "0.5"], "holds no files named stepSSSS_layerLLL.npz"),
        (["--captures", str(folder), "--density", "0.5"], "--captures needs --grid F,H,W"),
        (["--captures", str(folder), "--workload", "tiny", "--density", "0.5"], "give one of --workload NAME"),
        (["--captures", str(tmp_path / "nowhere"), *TINY, "--density", "0.5"], "does not exist"),
    ]:
        assert main(["calibrate", *argv, "-o", str(out)]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
        assert len(errors) == 1 and message in errors[0], (argv, errors)
        assert not out.exists()


def test_capture_without_torch_says_how_to_install(monkeypatch, tmp_path, capsys):
    """`paro capture` needs the capture extra; without torch it says so in one line (torch hidden here)."""
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)
    argv = ["capture", "--config", "c.json", "--frames", "1", "--height", "2", "--width", "2", "--text-tokens", "1",
            "-o", str(tmp_path / "c")]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert errors == ["paro: error: paro capture needs torch and diffusers: run `make install-capture` (or pip "
                      "install 'paro[capture]')"]
    assert not (tmp_path / "c").exists()
