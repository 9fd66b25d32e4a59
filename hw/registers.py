"""Register file of the attention engine: the register bus, the control registers, the per-block tables, the
bitmap's write port and the status counters, all as :mod:`paro.sw.contract` defines them.

Golden twin: :func:`paro.sw.golden.register_file` (the registers and tables after a sequence of bus writes,
each value kept to its contract width).

Bus (:data:`CSRBus`, seen from the master): a write (``we``) takes effect at the clock edge; a read is
combinational (``rdata`` follows ``addr`` in the same cycle). Region 0 holds the scalar registers; writing 1
to ``START`` raises ``start`` for that cycle. A write to a table region writes the table entry at the
address's offset; a write to the bitmap region drives ``bitmap_we``/``bitmap_addr``/``bitmap_data`` (the
bitmap lives in the block scheduler). Tables are read asynchronously (``*_addr`` to ``*_data``, same cycle).

Counters: ``CYCLES`` counts cycles with ``busy``, ``ARRAY_BEATS`` cycles with ``beat``, ``BYTES_READ`` and
``BYTES_WRITTEN`` add ``axi_data_bits / 8`` for each ``read_beat`` and ``write_beat``; ``clear`` (the
controller accepting a start) zeroes them. ``STALL_CYCLES`` reads ``CYCLES - ARRAY_BEATS``.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.sw.contract import ADDRESS_BITS, BITMAP, DATA_BITS, OFFSET_BITS, PROGRAM_REGISTERS, REGISTERS, TABLES

from .component import ConfiguredComponent

__all__ = ["CSRBus", "RegisterFile"]

#: The register bus, from the master's side.
CSRBus = wiring.Signature({"we": Out(1), "addr": Out(ADDRESS_BITS), "wdata": Out(DATA_BITS), "rdata": In(DATA_BITS)})


class RegisterFile(ConfiguredComponent):
    def __init__(self, config):
        nb = config.max_blocks
        ports = {"bus": In(CSRBus), "start": Out(1),
                 "bitmap_we": Out(1), "bitmap_addr": Out(range(nb * nb)), "bitmap_data": Out(BITMAP.entry_bits),
                 "busy": In(1), "done": In(1), "beat": In(1), "clear": In(1),
                 "kept8": In(32), "kept4": In(32), "skipped": In(32), "read_beat": In(1), "write_beat": In(1)}
        for name in PROGRAM_REGISTERS:
            ports[name.lower()] = Out(REGISTERS[name].width(config))
        for name, table in TABLES.items():
            ports[f"{name.lower()}_addr"] = In(range(nb))
            ports[f"{name.lower()}_data"] = Out(table.entry_bits)
        super().__init__(config, ports)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        region, offset = bus.addr[OFFSET_BITS:], bus.addr[:OFFSET_BITS]
        for name, table in TABLES.items():
            m.submodules[f"{name.lower()}_table"] = mem = Memory(shape=table.entry_bits,
                                                                 depth=table.entries(self._config), init=[])
            write, read = mem.write_port(), mem.read_port(domain="comb")
            m.d.comb += [write.addr.eq(offset), write.data.eq(bus.wdata), write.en.eq(bus.we & (region == table.region)),
                         read.addr.eq(getattr(self, f"{name.lower()}_addr")),
                         getattr(self, f"{name.lower()}_data").eq(read.data)]
        m.d.comb += [self.bitmap_we.eq(bus.we & (region == BITMAP.region)), self.bitmap_addr.eq(offset),
                     self.bitmap_data.eq(bus.wdata),
                     self.start.eq(bus.we & (bus.addr == REGISTERS["START"].address) & bus.wdata[0])]
        with m.If(bus.we):
            with m.Switch(bus.addr):
                for name in PROGRAM_REGISTERS:
                    with m.Case(REGISTERS[name].address):
                        m.d.sync += getattr(self, name.lower()).eq(bus.wdata)

        cycles, beats, read, written = Signal(32), Signal(32), Signal(32), Signal(32)
        beat_bytes = self._config.axi_data_bits // 8
        for counter, event, step in ((cycles, self.busy, 1), (beats, self.beat, 1), (read, self.read_beat, beat_bytes),
                                     (written, self.write_beat, beat_bytes)):
            with m.If(event):
                m.d.sync += counter.eq(counter + step)
        with m.If(self.clear):
            m.d.sync += [cycles.eq(0), beats.eq(0), read.eq(0), written.eq(0)]
        readable = {"STATUS": Cat(self.busy, self.done), "CYCLES": cycles, "ARRAY_BEATS": beats,
                    "STALL_CYCLES": cycles - beats, "KEPT8": self.kept8, "KEPT4": self.kept4, "SKIPPED": self.skipped,
                    "BYTES_READ": read, "BYTES_WRITTEN": written}
        with m.Switch(bus.addr):
            for name, value in readable.items():
                with m.Case(REGISTERS[name].address):
                    m.d.comb += bus.rdata.eq(value)
        return m
