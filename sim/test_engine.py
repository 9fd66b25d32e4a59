"""cocotb bench of the attention engine (``hw/engine.py``) on whole heads, bit for bit against ``sw.golden``.

Programs come as files (:func:`paro.sw.contract.save_program`) named in ``$PARO_PROGRAMS``; for each, the
bench puts Q, K and V into a cocotbext-axi ``AxiRam`` on the engine's AXI4 master at the program's addresses,
loads the program through the AXI4-Lite control port (``AxiLiteMaster``) exactly as
:func:`paro.sw.contract.program_writes` lists, starts the engine and waits for ``done``. Every channel of both
buses pauses at random with probability ``$PARO_GAP`` (valid gaps from the masters, back-pressure from the
slaves), and each read burst waits ``$PARO_READ_LATENCY`` cycles (default 0) before its first beat. Then it
reads the output codes from the RAM and compares every one with the program's golden codes, and the byte
counters with the golden fetcher's reads and the output region's size. Every AXI4-Lite response must be
``OKAY``.

Each program's outcome goes to the JSON file at the same position in ``$PARO_OUTCOMES``, so the caller can
say what happened: ``{"status": "ok", "counters": {...}}``, ``{"status": "mismatch", "detail": ...}`` (the
first differing beat) or ``{"status": "timeout", "detail": ...}`` (no ``done`` within the program's limit
from ``$PARO_CYCLE_LIMITS``).
"""

import json
import os

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiResp

from paro.sim.engine_check import Mismatch, compare, decode_codes, memory_image, memory_size
from paro.sim.streams import CLOCK_NS, bench_config, bench_rng, reset, start_clock
from paro.sw.contract import COUNTERS, DATA_BITS, REGISTERS, load_program, program_writes, region_bytes


def pause_randomly(rng, gap, *sides):
    """Pause every channel of the given cocotbext-axi interfaces with probability ``gap`` per cycle."""
    if gap > 0:
        for side in sides:
            for name in ("aw_channel", "w_channel", "b_channel", "ar_channel", "r_channel"):
                if hasattr(side, name):
                    getattr(side, name).set_pause_generator(iter(lambda: rng.random() < gap, None))


def control_port(dut, rng, gap):
    """An ``AxiLiteMaster`` on the engine's ``axil`` port."""
    master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil_"), dut.clk, dut.rst)
    pause_randomly(rng, gap, master.write_if, master.read_if)
    return master


def memory(dut, rng, gap, size, latency):
    """An ``AxiRam`` of ``size`` bytes on the engine's ``m_axi`` port; with ``latency``, each read burst's
    first beat comes at least ``latency`` cycles after its AR is taken (bursts are served in turn)."""
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=size)
    pause_randomly(rng, gap, ram.write_if, ram.read_if)
    if latency:
        take = ram.read_if.ar_channel.recv

        async def delayed():
            ar = await take()
            await ClockCycles(dut.clk, latency)
            return ar
        ram.read_if.ar_channel.recv = delayed
    return ram


async def csr_write(master, address, value):
    """Write one register or table word (word ``address``); the slave must answer OKAY."""
    response = await master.write(4 * address, (int(value) & 0xFFFFFFFF).to_bytes(DATA_BITS // 8, "little"))
    if response.resp != AxiResp.OKAY:
        raise AssertionError(f"AXI4-Lite write to word {address:#x} answered {response.resp!r}")


async def csr_read(master, address):
    response = await master.read(4 * address, DATA_BITS // 8)
    if response.resp != AxiResp.OKAY:
        raise AssertionError(f"AXI4-Lite read of word {address:#x} answered {response.resp!r}")
    return int.from_bytes(response.data, "little")


async def run_head(dut, master, ram, config, prog, cycle_limit):
    """Put Q/K/V in memory, program (through ``master``), start, wait for done; return (codes, counters)."""
    registers, blocks = prog.registers, int(prog.registers["N_BLOCKS"])
    ram.write(0, bytes(memory_image(config, prog, ram.size)))
    for address, value in program_writes(config, prog):
        await csr_write(master, address, value)
    await csr_write(master, REGISTERS["START"].address, 1)
    try:
        await with_timeout(RisingEdge(dut.done), cycle_limit * CLOCK_NS, "ns")
    except SimTimeoutError:
        raise Mismatch("timeout", f"engine not done after {cycle_limit} cycles") from None
    await RisingEdge(dut.clk)
    counters = {name: await csr_read(master, REGISTERS[name].address) for name in COUNTERS}
    codes = decode_codes(config, ram.read(registers["O_ADDR"], region_bytes(config, "O_ADDR", blocks)))
    return codes, counters


@cocotb.test()
async def engine_heads_bit_exact(dut):
    """Every program in $PARO_PROGRAMS: a whole head, output codes equal to the golden model's."""
    config = bench_config()
    rng = bench_rng("engine_heads_bit_exact")
    gap = float(os.environ.get("PARO_GAP", "0.2"))
    paths = os.environ["PARO_PROGRAMS"].split(os.pathsep)
    outcomes = os.environ["PARO_OUTCOMES"].split(os.pathsep)
    limits = [int(x) for x in os.environ["PARO_CYCLE_LIMITS"].split(os.pathsep)]
    programs = [load_program(path) for path in paths]
    await start_clock(dut)
    master = control_port(dut, rng, gap)
    ram = memory(dut, rng, gap, memory_size(config, [p for _, p in programs]),
                 int(os.environ.get("PARO_READ_LATENCY", "0")))
    for n, ((program_config, prog), outcome, limit) in enumerate(zip(programs, outcomes, limits)):
        assert program_config == config, f"program {n} was written for another configuration"
        await reset(dut)
        try:
            codes, counters = await run_head(dut, master, ram, config, prog, limit)
            compare(config, prog, codes, counters)
        except Mismatch as error:
            with open(outcome, "w") as f:
                json.dump({"status": error.status, "program": n, "detail": error.detail}, f)
            raise AssertionError(f"program {n}: {error.detail}") from None
        cocotb.log.info("program %d: %s", n, counters)
        with open(outcome, "w") as f:
            json.dump({"status": "ok", "program": n, "counters": counters}, f)
