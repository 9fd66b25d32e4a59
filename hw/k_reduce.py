"""K reduction: the key operands of 4-bit and 2-bit blocks, from INT8, on the key lanes of a QK^T beat.

Golden twin: :func:`paro.sw.golden.k_reduction` (4 bits: ``clip((k + 8) >> 4, -8, 7)``, the nearest multiple
of 16, ties up, in units of 16; 2 bits: the leading-zero cut ``clip((k + 32) >> 6, -2, 1)``, in units of 64;
the score unit multiplies the block's scores by ``2**K_REDUCE_SHIFT[bits]`` to undo the unit). A build with
``k4_cut = "leading-zero"`` cuts 4-bit K per element at its leading one instead: ``k4`` is the signed 3-bit
mantissa and ``e4`` the exponent (:func:`~paro.sw.golden.reduce_int8_to_int4_lz`), and the scores are not
rescaled.

Combinational, no latency: ``k4[n]`` (and ``k2[n]`` in a build with 2-bit blocks) follow ``k8[n]`` in the same
cycle, on ``config.engine_lanes`` lanes. Lanes ``2c, 2c + 1`` go to the nibbles of PE column ``c``'s operand
word in a 4-bit block, lanes ``4c .. 4c + 3`` to its crumbs in a 2-bit block.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from .component import ConfiguredComponent
from .rounding import round_shift

__all__ = ["KReduction"]


class KReduction(ConfiguredComponent):
    """``engine_lanes`` lanes of ``k4 = clip((k8 + 8) >> 4, -8, 7)`` and (2-bit builds) ``k2 = clip((k8 + 32)
    >> 6, -2, 1)``; with ``k4_cut = "leading-zero"`` ``k4`` is the leading-zero cut's mantissa and ``e4`` its
    exponent (:func:`~paro.sw.golden.reduce_int8_to_int4_lz`)."""

    def __init__(self, config):
        lanes = config.engine_lanes
        ports = {"k8": In(data.ArrayLayout(signed(8), lanes)), "k4": Out(data.ArrayLayout(signed(4), lanes))}
        if config.k4_cut == "leading-zero":
            ports["e4"] = Out(data.ArrayLayout(unsigned(3), lanes))
        if 2 in config.bitwidths:
            ports["k2"] = Out(data.ArrayLayout(signed(2), lanes))
        super().__init__(config, ports)

    def elaborate(self, platform):
        m = Module()
        for n in range(self._config.engine_lanes):
            k8 = self.k8[n]
            if self._config.k4_cut == "leading-zero":
                self._leading_zero(m, n)
            else:
                # (k8 + 8) >> 4 lies in [-8, 7] for k8 < 120; from 120 on it would be 8, which saturates to 7.
                m.d.comb += self.k4[n].eq(Mux(k8 >= 120, 7, (k8 + 8) >> 4))
            if 2 in self._config.bitwidths:
                # (k8 + 32) >> 6 lies in [-2, 1] for k8 < 96; from 96 on it would be 2, which saturates to 1.
                m.d.comb += self.k2[n].eq(Mux(k8 >= 96, 1, (k8 + 32) >> 6))
        return m

    def _leading_zero(self, m, n):
        """Lane ``n``'s leading-zero cut: 3 magnitude bits from the leading one, rounded (ties up), a carry to 8
        renormalised to 4 at the next exponent."""
        k8 = self.k8[n]
        magnitude, exponent = Signal(8, name=f"mag{n}"), Signal(range(6), name=f"exp{n}")
        rounded, mantissa = Signal(4, name=f"rounded{n}"), Signal(3, name=f"mant{n}")
        m.d.comb += [
            magnitude.eq(Mux(k8 < 0, -k8, k8)),
            exponent.eq(Mux(magnitude >= 128, 5, Mux(magnitude >= 64, 4, Mux(magnitude >= 32, 3,
                        Mux(magnitude >= 16, 2, Mux(magnitude >= 8, 1, 0)))))),
            rounded.eq(round_shift(magnitude, exponent)),
            mantissa.eq(Mux(rounded == 8, 4, rounded)),
            self.e4[n].eq(exponent + (rounded == 8)),
            self.k4[n].eq(Mux(k8 < 0, -mantissa, mantissa)),
        ]
