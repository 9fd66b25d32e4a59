"""Block scheduler: walks one query row of the BlockPlan bitmap and emits the kept key blocks in order.

Golden twin: the kept list of :func:`sw.golden.attention_block_row` (``(j, bits)`` for ``bitmap[i, j] > 0``,
in increasing ``j``).

The bitmap of one head lives in an on-chip memory (``max_blocks x max_blocks`` entries, 4 bits each),
written through ``wr_*``. A ``start`` pulse with ``row`` begins a walk: every cycle the scheduler reads one
entry (asynchronous read) and, for a kept block, loads it into its output register ``o`` (a ``lib.stream``
with ``j``, ``bits`` and ``end``); skipped (0-bit) blocks cost one cycle each and are never emitted, so they
are never fetched or computed. After the last column it emits one ``end`` beat. The walk runs ahead of the
consumer by one kept block (the output register), so while the engine computes block ``j`` the scheduler
already scans past the zeros to the next kept block: skipping costs no array cycle unless a whole run of
zeros is longer than a block's compute time.

Kept blocks come out in column order; the PE mode follows each block's bitwidth and mode changes cost no
cycle in the array, so no regrouping by bitwidth is needed.

Counters (for the pass that has ``count`` set at ``start``; ``clear`` zeroes them): ``kept8``, ``kept4``,
``skipped`` blocks.
"""

from amaranth import Module, Signal
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .component import ConfiguredComponent


__all__ = ["BlockScheduler", "kept_layout"]


def kept_layout(max_blocks):
    return data.StructLayout({"j": range(max_blocks), "bits": 4, "end": 1})


class BlockScheduler(ConfiguredComponent):
    def __init__(self, config):
        nb = config.max_blocks
        super().__init__(config, {
            "wr_en": In(1), "wr_addr": In(range(nb * nb)), "wr_data": In(4),
            "n_blocks": In(range(nb + 1)),
            "start": In(1), "row": In(range(nb)), "count": In(1), "clear": In(1),
            "o": Out(stream.Signature(kept_layout(nb))),
            "kept8": Out(32), "kept4": Out(32), "skipped": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        nb = self._config.max_blocks
        m.submodules.bitmap = bitmap = Memory(shape=4, depth=nb * nb, init=[])
        wr = bitmap.write_port()
        rd = bitmap.read_port(domain="comb")
        m.d.comb += [wr.en.eq(self.wr_en), wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data)]

        walking = Signal()
        counting = Signal()
        col = Signal(range(nb + 1))
        row = Signal(range(nb))
        m.d.comb += rd.addr.eq(row * nb + col)
        free = ~self.o.valid | self.o.ready
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.clear):
            m.d.sync += [self.kept8.eq(0), self.kept4.eq(0), self.skipped.eq(0)]
        with m.If(self.start):
            m.d.sync += [walking.eq(1), col.eq(0), row.eq(self.row), counting.eq(self.count),
                         self.o.valid.eq(0)]
        with m.Elif(walking & free):
            with m.If(col == self.n_blocks):
                m.d.sync += [walking.eq(0), self.o.valid.eq(1), self.o.payload.end.eq(1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
                with m.If(rd.data != 0):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.end.eq(0),
                                 self.o.payload.j.eq(col), self.o.payload.bits.eq(rd.data)]
                    with m.If(counting & (rd.data == 8)):
                        m.d.sync += self.kept8.eq(self.kept8 + 1)
                    with m.If(counting & (rd.data == 4)):
                        m.d.sync += self.kept4.eq(self.kept4 + 1)
                with m.Elif(counting):
                    m.d.sync += self.skipped.eq(self.skipped + 1)
        return m
