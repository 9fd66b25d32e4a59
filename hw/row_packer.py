"""Row packer: SimPicker's adaptive grouping of the query rows a block still computes after token reuse.

Golden twin: :func:`paro.sw.golden.row_packer`. The rows of a block's ``mask`` (one bit per query row, set
when the row is computed) come out in ascending order, packed into array groups of ``group`` rows
(``group_end`` on a group's last row or the block's last row), so the array's tiles hold computed rows only.
A block with no computed row gives one beat with ``empty`` (and ``last``), so the consumer still sees it end.

Streams and timing:

``mask`` (in)
    One block's row mask. Taken when the packer is idle, or in the cycle its previous block's last row is
    taken (blocks follow each other without a bubble).
``o`` (out)
    One beat per computed row, one a cycle while ``o.ready`` is high: ``row``, ``group_end``, ``last``,
    ``empty``. The row is the lowest pending one (a priority encoder over the block's rows); no cycle is
    spent on rows that are not computed.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.errors import ParoError

from .component import ConfiguredComponent
from .formal import stream_held

__all__ = ["RowPacker", "packed_layout", "formal_properties"]


def packed_layout(config):
    """An ``o`` beat: a computed row of the block and where its group and the block end."""
    return data.StructLayout({"row": range(config.block_size), "group_end": 1, "last": 1, "empty": 1})


class RowPacker(ConfiguredComponent):
    @classmethod
    def check(cls, config, group=None):
        group = config.rows if group is None else group
        if group < 1 or group & (group - 1) or group > config.block_size:
            raise ParoError(f"row packer groups must be a power of two in [1, block_size {config.block_size}], "
                            f"got {group}")

    def __init__(self, config, group=None):
        self._group = config.rows if group is None else group
        super().__init__(config, {
            "mask": In(stream.Signature(config.block_size)),
            "o": Out(stream.Signature(packed_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        B = self._config.block_size
        pending = Signal(B)                       # rows of the current block not yet given out
        empty = Signal()                          # the current block has no computed row: one beat to give
        in_group = Signal(range(self._group))
        lowest = Signal(range(B))
        for row in reversed(range(B)):            # the last assignment wins: the lowest pending row
            with m.If(pending[row]):
                m.d.comb += lowest.eq(row)
        remaining = Signal(B)
        m.d.comb += remaining.eq(pending & ~(1 << lowest))
        last = Signal()
        m.d.comb += last.eq(empty | (remaining == 0))
        m.d.comb += [self.o.valid.eq((pending != 0) | empty),
                     self.o.payload.row.eq(Mux(empty, 0, lowest)), self.o.payload.empty.eq(empty),
                     self.o.payload.last.eq(last),
                     self.o.payload.group_end.eq(last | (in_group == self._group - 1))]
        given = Signal()
        m.d.comb += [given.eq(self.o.valid & self.o.ready),
                     self.mask.ready.eq(~self.o.valid | (given & last))]
        with m.If(given):
            m.d.sync += [pending.eq(remaining), empty.eq(0),
                         in_group.eq(Mux(self.o.payload.group_end, 0, in_group + 1))]
        with m.If(self.mask.valid & self.mask.ready):
            m.d.sync += [pending.eq(self.mask.payload), empty.eq(self.mask.payload == 0), in_group.eq(0)]
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``o`` keeps the stream rules while ``mask`` is assumed to keep its: a packed row waits unchanged until taken."""
    stream_held(m, dut.mask, "mask", assume=True)
    stream_held(m, dut.o, "o")
