"""cocotb bench of the attention engine (``hw/engine.py``) on whole layers, bit for bit against ``sw.golden``.

Layers come as files (:func:`paro.sw.contract.save_layer`) named in ``$PARO_LAYERS``; for each, the bench
puts the layer's memory (:func:`paro.sw.contract.layer_memory`: descriptors, Q, K, V, bitmap rows, block
tables) into a cocotbext-axi ``AxiRam`` on the engine's AXI4 master, writes ``DESC_ADDR`` and ``N_HEADS``
through the AXI4-Lite control port (``AxiLiteMaster``), starts the engine (one start for the whole layer)
and waits for ``done``. Every channel of both buses pauses at random with probability ``$PARO_GAP`` (valid
gaps from the masters, back-pressure from the slaves), and each read burst waits ``$PARO_READ_LATENCY``
cycles (default 0) before its first beat. Then it reads the status, the totals and every head's counters,
reads each head's output codes from the RAM and compares every one with the golden codes, and the counters
with the golden fetcher's reads and the output regions' sizes (:func:`paro.sim.engine_check.compare`). A
layer listed in ``$PARO_EXPECT_ERRORS`` (JSON: per layer ``null`` or ``[code, head]``) must instead be
refused with that code, leaving every output region untouched. Every AXI4-Lite response must be ``OKAY``.

Each layer's outcome goes to the JSON file at the same position in ``$PARO_OUTCOMES``, so the caller can say
what happened: ``{"status": "ok", "totals": {...}, "per_head": [...]}``, ``{"status": "mismatch", "detail":
...}`` (the first differing beat or counter), ``{"status": "error", ...}`` (a descriptor refused) or
``{"status": "timeout", "detail": ...}`` (no ``done`` within the layer's limit from ``$PARO_CYCLE_LIMITS``).
"""

import json
import os

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiResp

from paro.sim.engine_check import (Mismatch, compare, decode_codes, memory_image, memory_size, output_regions,
                                   readout, split_readout)
from paro.sim.streams import CLOCK_NS, bench_config, bench_rng, reset, start_clock
from paro.sw.contract import DATA_BITS, REGISTERS, layer_writes, load_layer


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


async def run_layer(dut, master, ram, config, layer, cycle_limit):
    """Put the layer in memory, program (through ``master``), start, wait for done; return
    ``(codes per head, totals, per_head counters)``."""
    ram.write(0, bytes(memory_image(config, layer, ram.size)))
    for address, value in layer_writes(layer):
        await csr_write(master, address, value)
    await csr_write(master, REGISTERS["START"].address, 1)
    try:
        await with_timeout(RisingEdge(dut.done), cycle_limit * CLOCK_NS, "ns")
    except SimTimeoutError:
        raise Mismatch("timeout", f"engine not done after {cycle_limit} cycles") from None
    await RisingEdge(dut.clk)
    values = {key: await csr_read(master, address) for key, address in readout(len(layer.heads))}
    totals, per_head = split_readout(values, len(layer.heads))
    codes = [decode_codes(config, ram.read(address, nbytes)) for address, nbytes in output_regions(config, layer)]
    return codes, totals, per_head


@cocotb.test()
async def engine_layers_bit_exact(dut):
    """Every layer in $PARO_LAYERS, one start each: output codes equal to the golden model's."""
    config = bench_config()
    rng = bench_rng("engine_layers_bit_exact")
    gap = float(os.environ.get("PARO_GAP", "0.2"))
    paths = os.environ["PARO_LAYERS"].split(os.pathsep)
    outcomes = os.environ["PARO_OUTCOMES"].split(os.pathsep)
    limits = [int(x) for x in os.environ["PARO_CYCLE_LIMITS"].split(os.pathsep)]
    expect_errors = json.loads(os.environ.get("PARO_EXPECT_ERRORS", "null")) or [None] * len(paths)
    layers = [load_layer(path, check=expected is None) for path, expected in zip(paths, expect_errors)]
    await start_clock(dut)
    master = control_port(dut, rng, gap)
    ram = memory(dut, rng, gap, memory_size(config, [layer for _, layer in layers]),
                 int(os.environ.get("PARO_READ_LATENCY", "0")))
    for n, ((layer_config, layer), outcome, limit, expected) in enumerate(zip(layers, outcomes, limits, expect_errors)):
        assert layer_config == config, f"layer {n} was written for another configuration"
        await reset(dut)
        try:
            codes, totals, per_head = await run_layer(dut, master, ram, config, layer, limit)
            compare(config, layer, codes, totals, per_head, expected)
        except Mismatch as error:
            with open(outcome, "w") as f:
                json.dump({"status": error.status, "program": n, "detail": error.detail}, f)
            raise AssertionError(f"layer {n}: {error.detail}") from None
        cocotb.log.info("layer %d: %s", n, totals)
        with open(outcome, "w") as f:
            json.dump({"status": "ok", "program": n, "totals": totals, "per_head": per_head}, f)
