"""cocotb helpers shared by the benches: clock/reset, stream sources and sinks with random stalls.

A stream is the flattened ``lib.stream`` port of an Amaranth top: ``<name>__valid``, ``<name>__ready`` and
``<name>__payload`` (one packed vector; pack with ``layout.const({...}).as_bits()``, unpack with
``layout.from_bits(int)``). Sources drop ``valid`` at random (valid gaps); sinks drop ``ready`` at random
(back-pressure). Both follow the stream rules: a source never withdraws or changes a beat once offered, and a
beat moves only on a rising edge with valid and ready both high.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge
from cocotb.utils import get_sim_time

from paro.config import AcceleratorConfig

__all__ = ["bench_config", "bench_rng", "start_clock", "reset", "now_cycle", "StreamSource", "StreamSink",
           "dump_json"]


def bench_config():
    return AcceleratorConfig.from_json(os.environ["PARO_CONFIG"])


def bench_rng(name):
    """A seeded ``random.Random`` for one test; the seed is logged so a failure can be replayed."""
    seed = int(os.environ.get("PARO_SEED", "1"))
    cocotb.log.info("%s: seed %d (replay with PARO_SEED=%d)", name, seed, seed)
    return random.Random(f"{seed}:{name}")


async def start_clock(dut):
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())


async def reset(dut, cycles=2):
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


CLOCK_NS = 10


def now_cycle():
    """Index of the current clock cycle, from simulation time (deterministic, unlike a counting coroutine)."""
    return int(get_sim_time(unit="ns")) // CLOCK_NS


class StreamSource:
    """Drives ``beats`` (packed ints) into a stream, idling with probability ``gap`` before each beat.

    Timing: signals change just after a rising edge; ``ready`` is sampled at the falling edge, when the
    design's combinational logic has settled; the beat moves on the next rising edge. ``transfer_cycles``
    records the cycle of each transfer edge when ``stamp`` is set.
    """

    def __init__(self, dut, name, rng, gap=0.0, stamp=False):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rng, self.gap, self.stamp = rng, gap, stamp
        self.valid.value = 0
        self.transfer_cycles = []

    async def send(self, beats):
        """Must start just after a rising edge; returns just after the edge that took the last beat."""
        for beat in beats:
            while self.rng.random() < self.gap:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = beat
            while True:
                await FallingEdge(self.clk)
                accepted = self.ready.value == 1
                if not accepted:
                    # Idle until ready rises (it only changes after a clock edge), then sample again at
                    # the next falling edge: no per-cycle work while the design is busy elsewhere.
                    await RisingEdge(self.ready)
                    continue
                await RisingEdge(self.clk)
                break
            if self.stamp:
                self.transfer_cycles.append(now_cycle())
        self.valid.value = 0


class StreamSink:
    """Collects beats (packed ints) from a stream, holding ``ready`` low with probability ``stall`` a cycle."""

    def __init__(self, dut, name, rng, stall=0.0, stamp=False):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rng, self.stall, self.stamp = rng, stall, stamp
        self.ready.value = 0
        self.beats = []
        self.transfer_cycles = []

    async def run(self):
        while True:
            ready = 0 if self.rng.random() < self.stall else 1
            self.ready.value = ready
            await FallingEdge(self.clk)
            if self.valid.value != 1:
                # Idle until valid rises (after some clock edge); ready keeps its value meanwhile, which
                # is allowed: a sink may hold ready either way while nothing is offered.
                await RisingEdge(self.valid)
                continue
            take = ready and self.valid.value == 1
            payload = int(self.payload.value) if take else None
            await RisingEdge(self.clk)
            if take:
                self.beats.append(payload)
                if self.stamp:
                    self.transfer_cycles.append(now_cycle())


def dump_json(path, record):
    with open(path, "w") as f:
        json.dump(record, f)
