"""Fixed-point softmax pieces: the base-2 exponent unit and the leading-zero shift of a block segment.

Golden twins: :func:`sw.golden.exp2_numerators` and :func:`sw.golden.p_shift`.

Both are combinational (no latency); the engine instantiates one per lane of the P path.

* :class:`Exp2Unit`: ``e = 2**-t`` for ``t >= 0`` in score fixed point (``score_frac_bits`` fractional bits):
  ``n = t >> frac``, the fraction splits into a high and a low half that index two tables of
  ``2**(frac/2)`` entries (``2**(-h/2**half)`` and ``2**(-l/2**frac)`` in UQ1.exp_bits); their product is
  rounded back to exp_bits fractional bits and shifted right by ``n``; ``n > exp_bits`` gives 0.
* :class:`LeadingZeroShift`: ``z = clip(exp_bits - bit_length(peak), 0, 15)`` (0 when ``peak = 0``).
"""

from amaranth import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib.wiring import In, Out

from paro.sw.golden import P_SHIFT_MAX, exp_tables

from .component import ConfiguredComponent

__all__ = ["Exp2Unit", "LeadingZeroShift"]


class Exp2Unit(ConfiguredComponent):
    """``e = 2**-t`` (combinational). ``t``: unsigned, ``t_width`` bits; ``e``: exp_bits + 1 bits."""

    def __init__(self, config, t_width):
        super().__init__(config, {"t": In(unsigned(t_width)), "e": Out(unsigned(config.exp_bits + 1))})

    def elaborate(self, platform):
        m = Module()
        config = self._config
        frac, half, one_bits = config.score_frac_bits, config.score_frac_bits // 2, config.exp_bits
        hi_table, lo_table = exp_tables(config)
        hi = Array(Const(int(v), one_bits + 1) for v in hi_table)
        lo = Array(Const(int(v), one_bits + 1) for v in lo_table)
        n = Signal(len(self.t) - frac)        # integer part at full width: a large t must not wrap
        mantissa = Signal(one_bits + 1)
        m.d.comb += [
            n.eq(self.t >> frac),
            mantissa.eq((hi[self.t[half:frac]] * lo[self.t[:half]] + (1 << (one_bits - 1))) >> one_bits),
            self.e.eq(Mux(n > one_bits, 0, mantissa >> n)),
        ]
        return m


class LeadingZeroShift(ConfiguredComponent):
    """``z = clip(exp_bits - bit_length(peak), 0, 15)`` for a segment's largest numerator (combinational)."""

    def __init__(self, config):
        super().__init__(config, {"peak": In(unsigned(config.exp_bits + 1)), "z": Out(range(P_SHIFT_MAX + 1))})

    def elaborate(self, platform):
        m = Module()
        bits = self._config.exp_bits
        length = Signal(range(bits + 2))
        # bit_length(peak) by halving: log2 steps of a compare and a shift (a priority chain of exp_bits + 1
        # conditions is deeper in gates and, in Verilator, one branch per bit)
        rest, found, step = self.peak, 0, 1 << (bits.bit_length() - 1)
        while step:
            high = (rest >> step) != 0
            rest, found = Mux(high, rest >> step, rest), found + Mux(high, step, 0)
            step >>= 1
        m.d.comb += length.eq(found + rest[0])
        # peak = 2**exp_bits (the row maximum is in the segment) has bit length exp_bits + 1: z = 0.
        shift = Signal(range(bits + 1))
        m.d.comb += shift.eq(Mux(length > bits, 0, bits - length))
        clipped = Mux(shift > P_SHIFT_MAX, P_SHIFT_MAX, shift) if bits > P_SHIFT_MAX else shift
        m.d.comb += self.z.eq(Mux(self.peak == 0, 0, clipped))
        return m
