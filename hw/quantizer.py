"""P quantizer: softmax numerators to the block's bitwidth, with the segment's leading-zero shift.

Golden twin: :func:`sw.golden.p_quantize`. Combinational (no latency), one per lane of the P path.

``p = min(L_b, (e * L_b + 2**(exp_bits - z - 1)) >> (exp_bits - z))`` with ``L_8 = 127`` (INT8 mode, P as a
non-negative signed byte), ``L_4 = 15`` (UINT4 mode, one nibble) and ``L_2 = 3`` (UINT2 mode, one crumb).
``z <= exp_bits - 1`` whenever the segment is non-zero, so the shift is at least 1.
"""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib.wiring import In, Out

from paro.config import PACKING
from paro.sw.golden import P_LEVELS, P_SHIFT_MAX

from .component import ConfiguredComponent
from .rounding import round_shift

__all__ = ["PQuantizer"]


class PQuantizer(ConfiguredComponent):
    """``p`` from numerator ``e``, shift ``z`` and the block's ``packing`` (0: 8-bit, 1: 4-bit, 2: 2-bit)."""

    def __init__(self, config):
        super().__init__(config, {
            "e": In(unsigned(config.exp_bits + 1)),
            "z": In(range(P_SHIFT_MAX + 1)),
            "packing": In(2),
            "p": Out(unsigned(7)),
        })

    def elaborate(self, platform):
        m = Module()
        bits = self._config.exp_bits
        levels = Signal(range(128))
        m.d.comb += levels.eq(Mux(self.packing == PACKING[2], P_LEVELS[2],
                                  Mux(self.packing == PACKING[4], P_LEVELS[4], P_LEVELS[8])))
        shift = Signal(range(bits + 1))
        m.d.comb += shift.eq(bits - self.z)
        rounded = Signal(bits + 8 + 1)
        m.d.comb += rounded.eq(round_shift(self.e * levels, shift))
        m.d.comb += self.p.eq(Mux(rounded > levels, levels, rounded))
        return m
