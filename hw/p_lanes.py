"""P lanes: the softmax numerators and the quantized P operands of one PV beat, ``config.engine_lanes`` lanes
(``2C``, or ``4C`` with 2-bit blocks; one query each).

Golden twin: :func:`paro.sw.golden.p_lanes` (``e = 2**-(row_max - x)`` by :func:`~paro.sw.golden.exp2_numerators`,
0 for a padding key; ``p = min(L_b, round(e * 2**z * L_b / 2**exp_bits))`` with the lane's segment shift ``z``).

Two stages a lane, for the feed's two (:class:`~paro.hw.operand_feed.OperandFeed`): an
:class:`~paro.hw.softmax.Exp2Unit` on the beat in the first (``x``, ``row_max``, ``key_valid``), its ``e``
registered at each edge with ``en``; a :class:`~paro.hw.quantizer.PQuantizer` on the registered ``e`` with
the ``z`` and ``packing`` of the beat in the second. So ``e`` and ``p`` belong to the beat that was in the
first stage at the last enabled edge (the register splits the path from the score buffer's read through the
exponent and the quantizer to the PE operands, the tiny engine's critical path on ECP5 before it). In a PV
beat of key ``k`` lane ``n`` carries query ``n`` of the current query group: ``x`` its stored score for key
``k``, ``row_max`` its row maximum. ``e`` also feeds the row sums (on the first head-dimension group of each
block).
"""

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from paro.config import PACKING, SCORE_WIDTH
from paro.sw.golden import P_SHIFT_MAX

from .component import ConfiguredComponent
from .quantizer import PQuantizer
from .softmax import Exp2Unit

__all__ = ["PLanes", "lane_query_value"]


def lane_query_value(config, values, lane, packing, query_group):
    """What P lane ``lane`` reads of a per-query ``values`` (``block_size`` of them: the row maxima, a segment
    buffer entry, the row sums): query ``(query_group << packing) * C + lane`` of a block with that packing
    (lanes past ``C << packing`` are unused). One multiplexer per lane: lane ``n`` only ever reads the queries
    ``n mod s`` of the narrowest stride ``s = C << p`` of its packings ``p``."""
    B, C = config.block_size, config.cols
    packings = [PACKING[bits] for bits in config.computed_bitwidths if lane < C << PACKING[bits]]
    stride = C << min(packings)
    index = ((query_group << packing) * C + lane) >> (stride.bit_length() - 1)
    return Array(values[lane % stride + h * stride] for h in range(B // stride))[index]


class PLanes(ConfiguredComponent):
    """``e[n]`` (registered) from ``x[n]``, ``row_max[n]`` and ``key_valid`` at an edge with ``en``; ``p[n]``
    from it with ``z[n]``; ``packing`` picks L (127, 15 or 3)."""

    def __init__(self, config):
        lanes = config.engine_lanes
        scores = data.ArrayLayout(signed(SCORE_WIDTH), lanes)
        super().__init__(config, {
            "x": In(scores), "row_max": In(scores),
            "z": In(data.ArrayLayout(range(P_SHIFT_MAX + 1), lanes)),
            "packing": In(2), "key_valid": In(1), "en": In(1),
            "e": Out(data.ArrayLayout(unsigned(config.exp_bits + 1), lanes)),
            "p": Out(data.ArrayLayout(unsigned(7), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        for n in range(self._config.engine_lanes):
            m.submodules[f"exp{n}"] = exp = Exp2Unit(self._config, SCORE_WIDTH + 1)
            m.submodules[f"quant{n}"] = quant = PQuantizer(self._config)
            t = Signal(SCORE_WIDTH + 1, name=f"t{n}")
            e = Signal(unsigned(self._config.exp_bits + 1), name=f"e{n}")
            m.d.comb += [t.eq(self.row_max[n] - self.x[n]), exp.t.eq(t)]
            with m.If(self.en):
                m.d.sync += e.eq(Mux(self.key_valid, exp.e, 0))
            m.d.comb += [self.e[n].eq(e), quant.e.eq(e), quant.z.eq(self.z[n]), quant.packing.eq(self.packing),
                         self.p[n].eq(quant.p)]
        return m
