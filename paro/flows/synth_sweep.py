"""``paro synth --sweep``: Fmax and resources of the array over array sizes and PE pipeline depths on an FPGA.

Every point is placed and routed as ``paro synth --target`` does it (the array in its harness, then the
harness alone, subtracted): the report lists per point the achieved Fmax, whether the constraint file's
target is met, and the array's own LUTs, flip-flops, DSPs and block RAMs; a PNG beside the JSON plots Fmax
and LUTs per size, one line per pipeline depth. A point that does not fit the device is reported as such
(``fits: false``) and the sweep goes on.
"""

import re
import sys
import time

from ..config import MAX_PE_STAGES, AcceleratorConfig
from ..errors import ParoError
from ..files import build_root
from .bench import _pyplot, _save, write_result
from .provenance import progress, provenance
from .synth import DoesNotFit, _fpga

__all__ = ["synth_sweep", "parse_sizes", "parse_stages", "SWEEP_SIZES", "SWEEP_STAGES"]

SWEEP_SIZES = ((2, 2), (4, 4), (8, 8))
SWEEP_STAGES = tuple(range(MAX_PE_STAGES + 1))


def parse_sizes(text):
    """``"2x2,4x4"`` -> ``((2, 2), (4, 4))``; one line naming the problem otherwise."""
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not match:
            raise ParoError(f"--sweep-sizes takes sizes like 2x2,4x4,8x8; got {part.strip()!r}")
        sizes.append((int(match.group(1)), int(match.group(2))))
    return tuple(sizes)


def parse_stages(text):
    """``"0,2"`` -> ``(0, 2)``; each in ``[0, MAX_PE_STAGES]``."""
    try:
        stages = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ParoError(f"--sweep-stages takes pipeline depths like 0,1,2; got {text!r}") from None
    bad = [s for s in stages if not 0 <= s <= MAX_PE_STAGES]
    if bad:
        raise ParoError(f"--sweep-stages: pe_stages must be in [0, {MAX_PE_STAGES}], got {bad[0]}")
    return stages


def synth_sweep(base, target, sizes=SWEEP_SIZES, stages=SWEEP_STAGES, report=None, build_dir=None, log=None):
    """Place and route the array of ``base`` (an :class:`AcceleratorConfig`) at every size and pipeline depth on
    ``target``; write ``report`` (JSON, and a PNG beside it) if given; return the dict."""
    if target == "generic":
        raise ParoError("--sweep measures Fmax: give an FPGA --target (ecp5 or ice40)")
    log = log or (lambda message: print(f"[paro] {message}", file=sys.stderr, flush=True))
    configs = [AcceleratorConfig(**{**base.to_dict(), "rows": rows, "cols": cols, "acc_width": None,
                                    "bitwidths": tuple(base.bitwidths), "pe_stages": depth})
               for rows, cols in sizes for depth in stages]          # every point checked before any build
    points, start = [], time.monotonic()
    for n, config in enumerate(configs):
        progress(f"sweep {n + 1}/{len(configs)}: {config.rows}x{config.cols}, pe_stages {config.pe_stages}")
        work = build_root(build_dir) / "synth" / f"sweep_{target}_{config.rows}x{config.cols}_s{config.pe_stages}"
        point = {"rows": config.rows, "cols": config.cols, "pe_stages": config.pe_stages}
        try:
            fpga = _fpga(config, target, work, log=lambda message: None)
        except DoesNotFit as error:
            points.append({**point, "fits": False, "reason": str(error)})
            progress(f"  does not fit: {error}")
            continue
        points.append({**point, "fits": True, "fmax_mhz": fpga["fmax_mhz"], "target_mhz": fpga["target_mhz"],
                       "meets_target": fpga["meets_target"], "array": fpga["array"], "total": {
                           key: fpga[key] for key in ("luts", "flip_flops", "dsps", "brams")}})
        progress(f"  Fmax {fpga['fmax_mhz']:.1f} MHz, array {fpga['array']['luts']:,} LUTs, "
                 f"{fpga['array']['dsps']} DSPs")
    result = {"benchmark": "synth_sweep", **provenance(), "target": target, "config": base.to_dict(),
              "points": points, "seconds": round(time.monotonic() - start, 1),
              "units": {"fmax_mhz": "nextpnr achieved clock frequency (MHz)",
                        "array": "the array's own resources: the whole design minus a harness-only build"}}
    if report:
        write_result(report, result, _plot)
    return result


def _plot(result, path):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = sorted({(p["rows"], p["cols"]) for p in result["points"]}, key=lambda s: s[0] * s[1])
    labels = [f"{r}x{c}" for r, c in sizes]
    for depth in sorted({p["pe_stages"] for p in result["points"]}):
        by_size = {(p["rows"], p["cols"]): p for p in result["points"] if p["pe_stages"] == depth and p["fits"]}
        xs = [n for n, size in enumerate(sizes) if size in by_size]
        left.plot(xs, [by_size[sizes[n]]["fmax_mhz"] for n in xs], "o-", label=f"pe_stages {depth}")
        right.plot(xs, [by_size[sizes[n]]["array"]["luts"] for n in xs], "o-", label=f"pe_stages {depth}")
    targets = {p["target_mhz"] for p in result["points"] if p["fits"]}
    for target in targets:
        left.axhline(target, color="#888888", linestyle="--", linewidth=0.8)
    for ax, title, unit in ((left, "Fmax", "MHz"), (right, "array LUTs (harness subtracted)", "LUTs")):
        ax.set_xticks(range(len(sizes)), labels)
        ax.set_xlabel("array")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    right.set_yscale("log")
    fig.suptitle(f"paro synth sweep on {result['target']} ({result['commit'][:12]})", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)
