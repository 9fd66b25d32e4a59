"""Pooling unit: one INT8 row per block of ``block_size`` Q or K rows, the input of SimPicker's speculation.

Golden twin: :func:`paro.sw.golden.pooled_codes` (per block the rounded mean of its ``B`` rows,
``round(sum / B)`` with ties up; the sums of ``B`` codes in ``[-128, 127]`` round back into INT8).

Streams and timing:

``i`` (in)
    One token row a beat (``head_dim`` INT8 codes, padding rows included: they are zeros). Taken one a cycle
    while ``o`` is empty or being read; every ``block_size``-th row closes a block.
``o`` (out)
    The block's pooled row, registered: valid the cycle after its last row was taken, held until taken. A
    block costs ``block_size`` cycles; blocks follow each other without a bubble.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from .component import ConfiguredComponent
from .formal import stream_held
from .rounding import round_shift

__all__ = ["PoolingUnit", "pooled_layout", "formal_properties"]


def pooled_layout(config):
    """A row of ``head_dim`` INT8 codes (an ``i`` beat and an ``o`` beat)."""
    return data.ArrayLayout(signed(8), config.head_dim)


class PoolingUnit(ConfiguredComponent):
    def __init__(self, config):
        super().__init__(config, {
            "i": In(stream.Signature(pooled_layout(config))),
            "o": Out(stream.Signature(pooled_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        shift = cfg.block_size.bit_length() - 1
        sums = [Signal(signed(8 + shift + 1), name=f"sum{n}") for n in range(cfg.head_dim)]
        row = Signal(range(cfg.block_size))
        take = Signal()
        m.d.comb += [self.i.ready.eq(~self.o.valid | self.o.ready), take.eq(self.i.valid & self.i.ready)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += row.eq(row + 1)
            closing = row == cfg.block_size - 1
            for n, acc in enumerate(sums):
                total = acc + self.i.payload[n]
                m.d.sync += acc.eq(total)
                with m.If(closing):
                    rounded = round_shift(total, shift)
                    m.d.sync += [acc.eq(0), self.o.payload[n].eq(rounded)]
            with m.If(closing):
                m.d.sync += [row.eq(0), self.o.valid.eq(1)]
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``o`` keeps the stream rules while ``i`` is assumed to keep its: a
    pooled row waits unchanged until taken."""
    stream_held(m, dut.i, "i", assume=True)
    stream_held(m, dut.o, "o")
