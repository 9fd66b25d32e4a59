"""cocotb bench of the attention engine (``hw/engine.py``) on whole heads, bit for bit against ``sw.golden``.

Programs come as files (:func:`paro.sw.contract.save_program`) named in ``$PARO_PROGRAMS``; for each, the
bench loads it through the register bus exactly as :func:`paro.sw.contract.program_writes` lists, starts the
engine, streams K/V and Q in with random valid gaps and takes the output codes with random back-pressure
(probability ``$PARO_GAP``), then compares every code with the program's golden codes and reads the counters.

Each program's outcome goes to the JSON file at the same position in ``$PARO_OUTCOMES``, so the caller can
say what happened: ``{"status": "ok", "counters": {...}}``, ``{"status": "mismatch", "detail": ...}`` (the
first differing beat) or ``{"status": "timeout", "detail": ...}`` (no ``done`` within the program's limit
from ``$PARO_CYCLE_LIMITS``).
"""

import json
import os

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from paro.hw.engine import kv_layout, o_layout, q_layout
from paro.sim.streams import CLOCK_NS, StreamSink, StreamSource, bench_config, bench_rng, reset, start_clock
from paro.sw.contract import COUNTERS, REGISTERS, load_program, program_writes


async def csr_write(dut, address, value):
    dut.csr__we.value = 1
    dut.csr__addr.value = address
    dut.csr__wdata.value = int(value) & 0xFFFFFFFF
    await RisingEdge(dut.clk)
    dut.csr__we.value = 0


async def csr_read(dut, address):
    dut.csr__addr.value = address
    await FallingEdge(dut.clk)
    value = int(dut.csr__rdata.value)
    await RisingEdge(dut.clk)
    return value


class Mismatch(Exception):
    """The engine's output differs from the golden codes (``status`` says how)."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


async def run_head(dut, config, prog, rng, gap, cycle_limit):
    """Program, start, stream the head through; return (output beats as views, counters)."""
    for address, value in program_writes(config, prog):
        await csr_write(dut, address, value)
    kv = StreamSource(dut, "kv", rng, gap)
    q = StreamSource(dut, "q", rng, gap)
    sink = StreamSink(dut, "o", rng, gap)
    await csr_write(dut, REGISTERS["START"].address, 1)
    kvl, ql = kv_layout(config), q_layout(config)
    kv_beats = [kvl.const({"k": [int(x) for x in k], "v": [int(x) for x in v]}).as_bits()
                for k, v in zip(prog.k8, prog.v8)]
    q_beats = [ql.const({"q": [int(x) for x in row]}).as_bits() for row in prog.q8]
    cocotb.start_soon(kv.send(kv_beats))
    cocotb.start_soon(q.send(q_beats))
    sink_task = cocotb.start_soon(sink.run())
    try:
        await with_timeout(RisingEdge(dut.done), cycle_limit * CLOCK_NS, "ns")
    except SimTimeoutError:
        raise Mismatch("timeout", f"engine not done after {cycle_limit} cycles; "
                                  f"{len(sink.beats)} output beats so far") from None
    await RisingEdge(dut.clk)
    sink_task.cancel()
    counters = {name: await csr_read(dut, REGISTERS[name].address) for name in COUNTERS}
    return [o_layout(config).from_bits(v) for v in sink.beats], counters


def compare(config, prog, views, counters):
    """Raise :class:`Mismatch` at the first output beat or counter that differs from the program's."""
    groups = config.head_dim // config.rows
    expected = [[int(x) for x in prog.codes[query, g * config.rows:(g + 1) * config.rows]]
                for query in range(prog.codes.shape[0]) for g in range(groups)]
    got = [[int(view.o[r]) for r in range(config.rows)] for view in views]
    if len(got) != len(expected):
        raise Mismatch("mismatch", f"{len(got)} output beats, expected {len(expected)}")
    for beat, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            raise Mismatch("mismatch", f"output beat {beat} (query {beat // groups}, head dims "
                                       f"{(beat % groups) * config.rows}..): got {g}, golden {e}")
    lasts = [int(view.last) for view in views]
    if lasts[-1] != 1 or any(lasts[:-1]):
        raise Mismatch("mismatch", f"'last' is set on beats {[n for n, x in enumerate(lasts) if x]}, "
                                   f"expected only on beat {len(lasts) - 1}")
    for name, bits in (("KEPT8", 8), ("KEPT4", 4), ("SKIPPED", 0)):
        if counters[name] != int((prog.bitmap == bits).sum()):
            raise Mismatch("mismatch", f"counter {name} = {counters[name]}, the bitmap has "
                                       f"{int((prog.bitmap == bits).sum())}")


@cocotb.test()
async def engine_heads_bit_exact(dut):
    """Every program in $PARO_PROGRAMS: a whole head, output codes equal to the golden model's."""
    config = bench_config()
    rng = bench_rng("engine_heads_bit_exact")
    gap = float(os.environ.get("PARO_GAP", "0.2"))
    paths = os.environ["PARO_PROGRAMS"].split(os.pathsep)
    outcomes = os.environ["PARO_OUTCOMES"].split(os.pathsep)
    limits = [int(x) for x in os.environ["PARO_CYCLE_LIMITS"].split(os.pathsep)]
    await start_clock(dut)
    dut.csr__we.value = 0
    for n, (path, outcome, limit) in enumerate(zip(paths, outcomes, limits)):
        program_config, prog = load_program(path)
        assert program_config == config, f"program {n} was written for another configuration"
        await reset(dut)
        try:
            views, counters = await run_head(dut, config, prog, rng, gap, limit)
            compare(config, prog, views, counters)
        except Mismatch as error:
            with open(outcome, "w") as f:
                json.dump({"status": error.status, "program": n, "detail": error.detail}, f)
            raise AssertionError(f"program {n}: {error.detail}") from None
        cocotb.log.info("program %d: %s", n, counters)
        with open(outcome, "w") as f:
            json.dump({"status": "ok", "program": n, "counters": counters}, f)
