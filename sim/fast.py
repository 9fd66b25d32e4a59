"""Fast run mode of the attention engine: the Verilated engine inside a small C++ harness
(``fast_engine.cpp``: clock, AXI4 RAM, AXI4-Lite programming, done detection), Python only before and after
the run. Outputs are checked exactly as in the cocotb bench (:mod:`paro.sim.engine_check`). The model is
built from the engine's Verilog without its reset input (:func:`paro.hw.emit.emit_verilog` ``reset=False``):
each run is a fresh process whose registers start at their reset values, and Verilator no longer re-evaluates
every register's next-state logic whenever an input changes (28% faster).

What it does not cover, and the cocotb bench (:mod:`paro.sim.test_engine`) does: random pauses and
back-pressure on the buses (the harness's memory accepts every request at once and returns a beat a cycle
after ``read_latency``), and cocotbext-axi's protocol checks. Use it for long heads; keep the cocotb bench for
protocol coverage.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from paro.errors import ParoError
from paro.sw.contract import REGISTERS, layer_writes

from .engine_check import (Mismatch, compare, decode_codes, memory_image, memory_size, output_regions, readout,
                           split_readout)
from .runner import bench_folder, emit_source, simulator_problem, verilator_env

__all__ = ["build_fast", "run_fast"]


def build_fast(config, build_dir=None):
    """Build (or reuse) the fast-mode binary of the engine for ``config``; return its path."""
    problem = simulator_problem("verilator")
    if problem:
        raise ParoError(problem)
    folder = bench_folder(config, "engine", "verilator", "fast", build_dir)
    source = emit_source(config, "engine", folder, reset=False)   # one run per process: power-on state
    harness, binary = folder / "fast_engine.cpp", folder / "obj" / "paro_fast"
    cpp = resources.files("paro.sim").joinpath("fast_engine.cpp").read_bytes()
    if not harness.exists() or harness.read_bytes() != cpp:
        harness.write_bytes(cpp)
    if binary.exists() and binary.stat().st_mtime > max(source.stat().st_mtime, harness.stat().st_mtime):
        return binary
    env = {**os.environ, **verilator_env()}
    command = ["verilator", "--cc", "--exe", "--build", "-j", "2", "--top-module", "paro", "-O3",
               "-Wno-fatal", "-Wno-lint", "-Wno-style", "--Mdir", str(folder / "obj"), "-o", "paro_fast",
               "-CFLAGS", f"-O2 -DMAXI_BEAT_BYTES={config.axi_data_bits // 8}", str(source), str(harness)]
    log = folder / "build.log"
    print(f"[paro] building the fast engine model in {folder} (Verilator, C++)", file=sys.stderr, flush=True)
    with open(log, "w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0 or not binary.exists():
        print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise ParoError(f"Verilator build of the fast engine model failed (exit {result.returncode}); full log: {log}")
    return binary


def run_fast(config, layers, build_dir=None, read_latency=0, cycle_limits=None, expect_errors=None):
    """Run engine layers (:class:`paro.sw.contract.EngineLayer`, one start each) in the fast mode; return per
    layer ``(totals, per_head, stats)`` where ``stats`` holds ``run_cycles``, ``wall_seconds`` and
    ``cycles_per_second``. ``expect_errors`` (per layer ``None`` or ``(code, head)``) names a descriptor the
    engine must refuse. Raises :class:`Mismatch` (``status`` ``mismatch``, ``timeout`` or ``error``, with
    ``program`` = the layer's index) at the first layer that fails."""
    binary = build_fast(config, build_dir)
    results = []
    expect_errors = expect_errors or [None] * len(layers)
    with tempfile.TemporaryDirectory() as tmp:
        binary = _fresh_copy(binary, Path(tmp))
        size = memory_size(config, layers)
        for n, layer in enumerate(layers):
            image = Path(tmp) / f"memory{n}.bin"
            image.write_bytes(memory_image(config, layer, size))
            outputs = [Path(tmp) / f"output{n}_{head}.bin" for head in range(len(layer.heads))]
            limit = (cycle_limits or [10**12] * len(layers))[n]
            lines = [f"memory {image} {size}", f"latency {read_latency}", f"limit {limit}"]
            lines += [f"write {address} {value & 0xFFFFFFFF}" for address, value in layer_writes(layer)]
            lines += [f"write {REGISTERS['START'].address} 1"]
            registers = readout(len(layer.heads))
            lines += [f"read {key} {address}" for key, address in registers]
            lines += [f"dump {address} {nbytes} {path}"
                      for (address, nbytes), path in zip(output_regions(config, layer), outputs)]
            job = Path(tmp) / f"job{n}.txt"
            job.write_text("\n".join(lines) + "\n")
            start = time.monotonic()
            run = subprocess.run([str(binary), str(job)], capture_output=True, text=True)
            if run.returncode != 0:
                raise ParoError(f"the fast engine model failed on layer {n} (exit {run.returncode}): "
                                f"{run.stderr.strip()[-500:]}")
            values = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
            try:
                if values.get("status") != "ok":
                    raise Mismatch("timeout", f"engine not done after {limit} cycles")
                totals, per_head = split_readout({key: int(values[key]) for key, _ in registers}, len(layer.heads))
                compare(config, layer, [decode_codes(config, path.read_bytes()) for path in outputs], totals,
                        per_head, expect_errors[n])
            except Mismatch as error:
                error.program = n
                raise
            cycles, seconds = int(values["run_cycles"]), float(values["wall_seconds"])
            results.append((totals, per_head, {
                "run_cycles": cycles, "wall_seconds": seconds, "process_seconds": round(time.monotonic() - start, 3),
                "cycles_per_second": cycles / seconds if seconds > 0 else None}))
    return results


def _fresh_copy(binary, folder):
    """``binary`` copied into ``folder`` in one sequential write, the copy a run executes. On the
    development machine (Linux 6.18, a VM) the run time of one executable file depends on where its
    pages landed: the same bytes ran the ``small`` head in 1.53 to 2.06 s over six copies (each copy the
    same within 2% from run to run), and the linker's own file sat at 2.0 s. A copy per call makes every
    run a fresh draw, so that a median over runs (``paro bench engine-speed``) samples the spread instead
    of repeating one draw. Same bytes, same results; only the speed changes."""
    copy = folder / binary.name
    shutil.copyfile(binary, copy)
    shutil.copymode(binary, copy)
    return copy
