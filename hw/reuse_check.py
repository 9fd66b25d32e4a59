"""Reuse check: SimPicker's token-reuse test of one query against its anchor.

Golden twin: :func:`paro.sw.golden.reuse_check` (``2**REUSE_FRAC_BITS * |t - a|**2 <= tau * |a|**2`` on
dequantised integer queries ``q8 * mult``; :func:`paro.sw.golden.reuse_anchors` applies it token by token).

Arithmetic. Each lane scales its INT8 codes by their Q block's integer scale mantissa (``mult_t``,
``mult_a``: 15 bits, one exponent for the head, so it cancels), squares the difference and the anchor, and
the unit sums both over the ``head_dim`` values of the pair; every width is exact (``|q8 * mult| < 2**22``,
sums below ``2**55``), so the comparison is the golden one bit for bit.

Streams and timing (``lanes`` values a beat, ``head_dim / lanes`` beats a pair):

``i`` (in)
    ``lanes`` codes of the query ``t`` and of its anchor ``a``, the two mantissas (held over the pair) and
    ``last`` on the pair's last beat. Taken one a cycle while ``o`` is empty or being read.
``o`` (out)
    ``reuse`` for each pair, registered: valid the cycle after the pair's last beat was taken, held until
    taken. A pair costs ``head_dim / lanes`` cycles; pairs follow each other without a bubble.
``tau``
    ``round(reuse_threshold**2 * 2**REUSE_FRAC_BITS)``, held while a pair is checked.
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.sw.golden import REUSE_FRAC_BITS

from .component import ConfiguredComponent, check_lanes
from .formal import stream_held

__all__ = ["ReuseCheck", "pair_layout", "MULT_BITS", "formal_properties"]

#: Width of a Q block's integer scale mantissa (:func:`paro.sw.golden.int_multipliers`).
MULT_BITS = 15


def pair_layout(lanes):
    """An ``i`` beat: ``lanes`` INT8 codes of the query and of its anchor, their mantissas, the pair's end."""
    return data.StructLayout({"t": data.ArrayLayout(signed(8), lanes), "a": data.ArrayLayout(signed(8), lanes),
                              "mult_t": unsigned(MULT_BITS), "mult_a": unsigned(MULT_BITS), "last": 1})


class ReuseCheck(ConfiguredComponent):
    @classmethod
    def check(cls, config, lanes=8):
        check_lanes(config, lanes, "reuse check")

    def __init__(self, config, lanes=8):
        self._lanes = lanes
        super().__init__(config, {
            "i": In(stream.Signature(pair_layout(lanes))),
            "o": Out(stream.Signature(data.StructLayout({"reuse": 1}))),
            "tau": In(range((1 << REUSE_FRAC_BITS) + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        beats_bits = (self._config.head_dim // self._lanes).bit_length()
        square = 2 * (8 + MULT_BITS)                      # |q8 * mult| < 2**22: a difference squared < 2**46
        distance = Signal(unsigned(square + beats_bits + self._lanes.bit_length()))
        norm = Signal(unsigned(square + beats_bits + self._lanes.bit_length()))
        beat = self.i.payload
        take = Signal()
        m.d.comb += [self.i.ready.eq(~self.o.valid | self.o.ready), take.eq(self.i.valid & self.i.ready)]

        beat_distance, beat_norm = 0, 0
        for lane in range(self._lanes):
            t = Signal(signed(8 + MULT_BITS + 1), name=f"t{lane}")
            a = Signal(signed(8 + MULT_BITS + 1), name=f"a{lane}")
            diff = Signal(signed(8 + MULT_BITS + 2), name=f"diff{lane}")
            m.d.comb += [t.eq(beat.t[lane] * beat.mult_t), a.eq(beat.a[lane] * beat.mult_a), diff.eq(t - a)]
            beat_distance += (diff * diff).as_unsigned()
            beat_norm += (a * a).as_unsigned()
        total_distance = Signal.like(distance)
        total_norm = Signal.like(norm)
        m.d.comb += [total_distance.eq(distance + beat_distance), total_norm.eq(norm + beat_norm)]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += [distance.eq(total_distance), norm.eq(total_norm)]
            with m.If(beat.last):
                m.d.sync += [distance.eq(0), norm.eq(0), self.o.valid.eq(1),
                             self.o.payload.reuse.eq((total_distance << REUSE_FRAC_BITS) <= self.tau * total_norm)]
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``o`` keeps the stream rules while ``i`` is assumed to keep its: a decision waits unchanged until taken."""
    stream_held(m, dut.i, "i", assume=True)
    stream_held(m, dut.o, "o")
