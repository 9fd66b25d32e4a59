"""``paro bench calibration-speed``: the wall clock and peak memory of one whole-layer calibration, run as a
user runs it (a fresh ``paro calibrate`` process), with the phases from its report."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import ParoError
from ..sw.calibrate import default_jobs
from .bench import _pyplot, _save, write_result
from .provenance import progress, provenance

__all__ = ["bench_calibration_speed", "CALIBRATION_TARGET"]

#: The issue's target for a CogVideoX-5B layer on the 2-core development machine: wall seconds, peak MB.
CALIBRATION_TARGET = {"seconds": 180.0, "peak_rss_mb": 2048.0}


def bench_calibration_speed(output, workload="cogvideox", density=0.25, avg_bits=1.5, heads=None):
    """Time ``paro calibrate --workload WORKLOAD --density D --avg-bits B`` in a child process: wall seconds,
    the child's peak resident memory (``wait4``'s rusage, the figure ``/usr/bin/time -v`` prints), the report's
    phases and quality; writes ``output`` (JSON) and a PNG beside it."""
    argv = ["calibrate", "--workload", workload, "--density", str(density), "--avg-bits", str(avg_bits)]
    if heads is not None:
        argv += ["--heads", str(heads)]
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        command = argv + ["-o", str(Path(tmp) / "plan.npz"), "--report", str(report_path)]
        progress(f"calibration speed: paro {' '.join(argv)} (a child process; its progress follows)")
        start = time.monotonic()
        child = subprocess.Popen([sys.executable, "-c", "import sys; from paro.flows.cli import main; "
                                                        "sys.exit(main(sys.argv[1:]))", *command])
        _, status, usage = os.wait4(child.pid, 0)          # this child's own resource usage
        wall = time.monotonic() - start
        code = child.returncode = os.waitstatus_to_exitcode(status)
        if code != 0 or not report_path.exists():
            raise ParoError(f"paro {' '.join(argv)} failed (exit status {code}); run it alone to see why")
        report = json.loads(report_path.read_text())
    peak_mb = usage.ru_maxrss / 1024                       # Linux: kilobytes
    result = {
        "benchmark": "calibration_speed", **provenance(),
        "calibrate_command": "paro " + " ".join(argv),
        "workload": report["workload"], "layout": report["layout"], "config": report["config"],
        "budget": report["budget"], "jobs": report["jobs"], "cpus": default_jobs(),
        "wall_seconds": round(wall, 2), "peak_rss_mb": round(peak_mb, 1),
        "phases_seconds": report["seconds"],
        "target": CALIBRATION_TARGET,
        "meets_target": wall <= CALIBRATION_TARGET["seconds"] and peak_mb <= CALIBRATION_TARGET["peak_rss_mb"],
        "quality": {key: report[key] for key in ("density", "avg_bits", "cosine", "rel_l1", "cosine_identity",
                                                 "rel_l1_identity")},
        "orders": [h["order"] for h in report["heads"]],
        "units": {"wall_seconds": "wall clock of the child process, start to exit (imports included)",
                  "peak_rss_mb": "peak resident set size of the child process, MiB (wait4 ru_maxrss)",
                  "phases_seconds": "wall clock per phase from the calibration's report (imports and writing "
                                    "the plan excluded)"},
    }
    return write_result(output, result, _plot_calibration_speed)


def _plot_calibration_speed(result, path):
    plt = _pyplot()

    phases = {k: v for k, v in result["phases_seconds"].items() if k != "total"}
    other = max(0.0, result["wall_seconds"] - sum(phases.values()))
    fig, ax = plt.subplots(figsize=(7, 2.8))
    left = 0.0
    for (name, seconds), color in zip([*phases.items(), ("imports, files", other)],
                                      ["#2a7ab9", "#e3a21a", "#5aa05a", "#b94a2a", "#888888"]):
        ax.barh([0], [seconds], left=left, color=color, label=f"{name} {seconds:.0f} s")
        left += seconds
    ax.axvline(result["target"]["seconds"], color="black", linestyle="--", linewidth=1)
    ax.annotate(f"target {result['target']['seconds']:.0f} s ", (result["target"]["seconds"], 0.25), fontsize=8,
                ha="right")
    ax.set_yticks([])
    ax.set_xlabel("wall-clock seconds")
    layout = result["layout"]
    tokens = layout["frames"] * layout["height"] * layout["width"] + layout["text_tokens"]
    ax.set_title(f"{result['calibrate_command']}\n{result['workload'].get('heads')} heads x {tokens:,} "
                 f"tokens, {result['jobs']} jobs: {result['wall_seconds']:.0f} s, peak {result['peak_rss_mb']:.0f} MB "
                 f"({result['commit'][:12]})", fontsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4)
    fig.tight_layout()
    _save(fig, path, plt)
