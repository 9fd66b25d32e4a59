"""Register file of the attention engine: the register bus, the control registers, the status, the totals and
the per-head counters, all as :mod:`paro.sw.contract` defines them.

Golden twin: :func:`paro.sw.golden.register_file` (the control registers after a sequence of bus writes, each
value kept to its contract width).

Bus (:data:`CSRBus`, seen from the master): a write (``we``) takes effect at the clock edge; a read is
combinational (``rdata`` follows ``addr`` in the same cycle). Writing 1 to ``START`` raises ``start`` for
that cycle. While ``busy`` every write is ignored (the control registers hold; the sequencer takes no start).
Region ``HEAD_COUNTERS_REGION`` reads the per-head counters (word ``head * COUNTER_STRIDE + n``).

Counters: ``CYCLES`` counts cycles with ``busy``, ``ARRAY_BEATS`` cycles with ``beat``, ``KEPT8``,
``KEPT4``, ``KEPT2`` and ``SKIPPED`` cycles with the scheduler's ``kept8``/``kept4``/``kept2``/``skipped``,
``BYTES_READ`` and ``BYTES_WRITTEN`` add ``axi_data_bits / 8`` for each ``read_beat`` and ``write_beat``,
``SPEC_BUSY`` and ``SPEC_WAIT`` count cycles with ``spec_busy`` and ``spec_wait``; ``clear`` (the
sequencer accepting a start) zeroes them. ``STALL_CYCLES`` reads ``CYCLES - ARRAY_BEATS``. A second set
counts the same events while ``head_active``, zeroed by ``head_start``; ``head_store`` (one cycle) writes it,
``STALL_CYCLES`` included, to the per-head memory at ``head`` (``max_heads x len(COUNTERS)`` words).
"""

from amaranth import Cat, Module, Signal
from amaranth.hdl import Assert
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.sw.contract import (ADDRESS_BITS, CONTROL_REGISTERS, COUNTERS, DATA_BITS, HEAD_COUNTERS_REGION,
                              OFFSET_BITS, REGISTERS, STATUS_BITS)

from .component import ConfiguredComponent
from .descriptor import ERROR_BITS
from .formal import past
from .word_mux import word_mux

__all__ = ["CSRBus", "RegisterFile", "formal_properties"]

#: The register bus, from the master's side.
CSRBus = wiring.Signature({"we": Out(1), "addr": Out(ADDRESS_BITS), "wdata": Out(DATA_BITS), "rdata": In(DATA_BITS)})
#: Counters that count events (STALL_CYCLES is derived), with the event's port name.
_EVENTS = {"CYCLES": None, "ARRAY_BEATS": "beat", "KEPT8": "kept8", "KEPT4": "kept4", "KEPT2": "kept2",
           "SKIPPED": "skipped",
           "BYTES_READ": "read_beat", "BYTES_WRITTEN": "write_beat", "SPEC_BUSY": "spec_busy", "SPEC_WAIT": "spec_wait"}


class RegisterFile(ConfiguredComponent):
    def __init__(self, config):
        heads = config.max_heads
        ports = {"bus": In(CSRBus), "start": Out(1),
                 **{name.lower(): Out(REGISTERS[name].width(config)) for name in CONTROL_REGISTERS},
                 "busy": In(1), "done": In(1), "error": In(1), "error_code": In(ERROR_BITS),
                 "error_head": In(range(heads)), "heads_done": In(range(heads + 1)), "clear": In(1),
                 "head": In(range(heads)), "head_start": In(1), "head_active": In(1), "head_store": In(1),
                 **{port: In(1) for port in _EVENTS.values() if port}}
        super().__init__(config, ports)

    def elaborate(self, platform):
        m = Module()
        cfg, bus = self._config, self.bus
        beat_bytes = cfg.axi_data_bits // 8
        m.d.comb += self.start.eq(bus.we & ~self.busy & (bus.addr == REGISTERS["START"].address) & bus.wdata[0])
        with m.If(bus.we & ~self.busy):
            with m.Switch(bus.addr):
                for name in CONTROL_REGISTERS:
                    with m.Case(REGISTERS[name].address):
                        m.d.sync += getattr(self, name.lower()).eq(bus.wdata)

        total = {name: Signal(DATA_BITS, name=f"total_{name.lower()}") for name in _EVENTS}
        head = {name: Signal(DATA_BITS, name=f"head_{name.lower()}") for name in _EVENTS}
        for name, port in _EVENTS.items():
            step = beat_bytes if name.startswith("BYTES") else 1
            event = getattr(self, port) if port else self.busy
            with m.If(event):
                m.d.sync += total[name].eq(total[name] + step)
            with m.If(event & self.head_active):
                m.d.sync += head[name].eq(head[name] + step)
        with m.If(self.clear):
            m.d.sync += [counter.eq(0) for counter in total.values()]
        with m.If(self.head_start):
            m.d.sync += [counter.eq(0) for counter in head.values()]

        def with_stall(values):
            return {**values, "STALL_CYCLES": values["CYCLES"] - values["ARRAY_BEATS"]}

        m.submodules.head_counters = store = Memory(shape=len(COUNTERS) * DATA_BITS, depth=cfg.max_heads, init=[])
        write, read = store.write_port(), store.read_port(domain="comb")
        per_head = with_stall(head)
        m.d.comb += [write.en.eq(self.head_store), write.addr.eq(self.head),
                     write.data.eq(Cat(*(per_head[name][:DATA_BITS] for name in COUNTERS)))]

        region, offset = bus.addr[OFFSET_BITS:], bus.addr[:OFFSET_BITS]
        index = (len(COUNTERS) - 1).bit_length()
        m.d.comb += read.addr.eq(offset[index:])
        status = {"busy": self.busy, "done": self.done, "error": self.error}
        readable = {"STATUS": Cat(*(status[bit] for bit in STATUS_BITS)),
                    "ERROR": self.error_code | (self.error_head << 8),
                    "HEADS_DONE": self.heads_done, **{name: v[:DATA_BITS] for name, v in with_stall(total).items()}}
        with m.If((region == HEAD_COUNTERS_REGION) & (offset[index:] < cfg.max_heads)):
            m.d.comb += bus.rdata.eq(word_mux(read.data, offset[:index], DATA_BITS))
        with m.Else():
            with m.Switch(bus.addr):
                for name, value in readable.items():
                    with m.Case(REGISTERS[name].address):
                        m.d.comb += bus.rdata.eq(value)
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): while ``busy``, no write changes a control register and no
    ``start`` is raised."""
    controls = Cat(*(getattr(dut, name.lower()) for name in CONTROL_REGISTERS))
    before, was_busy = past(m, controls, "controls"), past(m, dut.busy, "busy")
    m.d.comb += Assert(~dut.busy | ~dut.start, "no start while busy")
    with m.If(was_busy):
        m.d.comb += Assert(controls == before, "control registers hold while busy")
