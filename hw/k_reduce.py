"""K reduction: the key operands of 4-bit blocks, INT8 to INT4, on the ``2C`` key lanes of a QK^T beat.

Golden twin: :func:`paro.sw.golden.k_reduction` (``clip((k + 8) >> 4, -8, 7)``: the nearest multiple of 16,
ties up, in units of 16; the score scaling multiplies 4-bit blocks' scores by 16 to undo the unit).

Combinational, no latency: ``k4[n]`` follows ``k8[n]`` in the same cycle. Lanes ``2c`` and ``2c + 1`` go to the
low and high nibble of PE column ``c``'s operand word.
"""

from amaranth import Module, Mux, signed
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from .component import ConfiguredComponent

__all__ = ["KReduction"]


class KReduction(ConfiguredComponent):
    """``2 * cols`` lanes of ``k4 = clip((k8 + 8) >> 4, -8, 7)``."""

    def __init__(self, config):
        lanes = 2 * config.cols
        super().__init__(config, {"k8": In(data.ArrayLayout(signed(8), lanes)),
                                  "k4": Out(data.ArrayLayout(signed(4), lanes))})

    def elaborate(self, platform):
        m = Module()
        for n in range(2 * self._config.cols):
            k8 = self.k8[n]
            # (k8 + 8) >> 4 lies in [-8, 7] for k8 < 120; from 120 on it would be 8, which saturates to 7.
            m.d.comb += self.k4[n].eq(Mux(k8 >= 120, 7, (k8 + 8) >> 4))
        return m
