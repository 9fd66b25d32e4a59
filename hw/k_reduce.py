"""K reduction: the key operands of 4-bit and 2-bit blocks, from INT8, on the key lanes of a QK^T beat.

Golden twin: :func:`paro.sw.golden.k_reduction` (4 bits: ``clip((k + 8) >> 4, -8, 7)``, the nearest multiple
of 16, ties up, in units of 16; 2 bits: the leading-zero cut ``clip((k + 32) >> 6, -2, 1)``, in units of 64;
the score unit multiplies the block's scores by ``2**K_REDUCE_SHIFT[bits]`` to undo the unit). A build with
``k4_cut = "leading-zero"`` cuts 4-bit K per element at its leading one instead: ``k4`` is the signed 3-bit
mantissa and ``e4`` the exponent (:func:`~paro.sw.golden.reduce_int8_lz`), and the scores are not rescaled;
with ``k2_cut = "leading-zero"`` likewise for 2-bit K: ``k2`` the sign (-1, 0 or 1) and ``e2`` the exponent of
the nearest power of two.

Combinational, no latency: ``k4[n]`` (and ``k2[n]`` in a build with 2-bit blocks) follow ``k8[n]`` in the same
cycle, on ``config.engine_lanes`` lanes. Lanes ``2c, 2c + 1`` go to the nibbles of PE column ``c``'s operand
word in a 4-bit block, lanes ``4c .. 4c + 3`` to its crumbs in a 2-bit block.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from paro.config import K_EXP_BITS
from paro.sw.golden import K_LZ_MANTISSA_BITS, lz_max_exponent

from .component import ConfiguredComponent
from .rounding import round_shift

__all__ = ["KReduction"]


class KReduction(ConfiguredComponent):
    """``engine_lanes`` lanes of ``k4 = clip((k8 + 8) >> 4, -8, 7)`` and (2-bit builds) ``k2 = clip((k8 + 32)
    >> 6, -2, 1)``; with ``k4_cut`` / ``k2_cut = "leading-zero"`` ``k4`` / ``k2`` is the leading-zero cut's
    mantissa and ``e4`` / ``e2`` its exponent (:func:`~paro.sw.golden.reduce_int8_lz`)."""

    def __init__(self, config):
        lanes = config.engine_lanes
        ports = {"k8": In(data.ArrayLayout(signed(8), lanes)), "k4": Out(data.ArrayLayout(signed(4), lanes))}
        if config.leading_zero(4):
            ports["e4"] = Out(data.ArrayLayout(unsigned(K_EXP_BITS), lanes))
        if 2 in config.bitwidths:
            ports["k2"] = Out(data.ArrayLayout(signed(2), lanes))
        if config.leading_zero(2):
            ports["e2"] = Out(data.ArrayLayout(unsigned(K_EXP_BITS), lanes))
        super().__init__(config, ports)

    def elaborate(self, platform):
        m = Module()
        for n in range(self._config.engine_lanes):
            k8 = self.k8[n]
            magnitude = Signal(8, name=f"mag{n}")
            m.d.comb += magnitude.eq(Mux(k8 < 0, -k8, k8))
            if self._config.leading_zero(4):
                self._leading_zero(m, n, 4, magnitude, self.k4[n], self.e4[n])
            else:
                # (k8 + 8) >> 4 lies in [-8, 7] for k8 < 120; from 120 on it would be 8, which saturates to 7.
                m.d.comb += self.k4[n].eq(Mux(k8 >= 120, 7, (k8 + 8) >> 4))
            if self._config.leading_zero(2):
                self._leading_zero(m, n, 2, magnitude, self.k2[n], self.e2[n])
            elif 2 in self._config.bitwidths:
                # (k8 + 32) >> 6 lies in [-2, 1] for k8 < 96; from 96 on it would be 2, which saturates to 1.
                m.d.comb += self.k2[n].eq(Mux(k8 >= 96, 1, (k8 + 32) >> 6))
        return m

    def _leading_zero(self, m, n, bits, magnitude, k, e):
        """Lane ``n``'s leading-zero cut to ``bits`` bits: ``M = K_LZ_MANTISSA_BITS[bits]`` magnitude bits from
        the leading one, rounded (ties up), a carry to ``2**M`` renormalised to ``2**(M-1)`` at the next
        exponent; the sign of ``k8``."""
        kept, top = K_LZ_MANTISSA_BITS[bits], lz_max_exponent(bits)
        exponent = Signal(range(top + 1), name=f"exp{bits}_{n}")
        rounded, mantissa = Signal(kept + 1, name=f"rounded{bits}_{n}"), Signal(kept, name=f"mant{bits}_{n}")
        # exponent = max(0, bit_length(magnitude) - kept): the highest threshold 2**(kept + e - 1) reached
        choice = 0
        for step in range(1, top + 1):
            choice = Mux(magnitude >= (1 << (kept + step - 1)), step, choice)
        m.d.comb += [
            exponent.eq(choice),
            rounded.eq(round_shift(magnitude, exponent)),
            mantissa.eq(Mux(rounded == 1 << kept, 1 << (kept - 1), rounded)),
            e.eq(exponent + (rounded == 1 << kept)),
            k.eq(Mux(self.k8[n] < 0, -mantissa, mantissa)),
        ]
