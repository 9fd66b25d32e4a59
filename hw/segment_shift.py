"""Segment shift: the leading-zero shift ``z`` of each P lane's (query, kept block) segment.

Golden twin: :func:`paro.sw.golden.segment_shift` (``p_shift`` of the segment's largest numerator, which is
``2**-(row_max - seg_max)``: the exponent is monotone, so the largest numerator belongs to the largest score).

Combinational, no latency, ``config.engine_lanes`` lanes, each an :class:`~paro.hw.softmax.Exp2Unit` on
``row_max - seg_max`` and a :class:`~paro.hw.softmax.LeadingZeroShift`. The controller puts ``z`` into each PV beat's command; the
segment maxima come from the segment buffer the score unit writes in pass A. A segment with no real key has
``seg_max`` at the most negative score, so its numerator is 0 and ``z = 0``.
"""

from amaranth import Module, signed
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_WIDTH
from paro.sw.golden import P_SHIFT_MAX

from .component import ConfiguredComponent
from .softmax import Exp2Unit, LeadingZeroShift

__all__ = ["SegmentShift"]


class SegmentShift(ConfiguredComponent):
    """``z[n]`` of lane ``n`` from its row maximum and its segment maximum (scores, ``SCORE_WIDTH`` bits)."""

    def __init__(self, config):
        lanes = data.ArrayLayout(signed(SCORE_WIDTH), config.engine_lanes)
        super().__init__(config, {"row_max": In(lanes), "seg_max": In(lanes),
                                  "z": Out(data.ArrayLayout(range(P_SHIFT_MAX + 1), config.engine_lanes))})

    def elaborate(self, platform):
        m = Module()
        for n in range(self._config.engine_lanes):
            m.submodules[f"peak_exp{n}"] = peak_exp = Exp2Unit(self._config, SCORE_WIDTH + 1)
            m.submodules[f"lz{n}"] = lz = LeadingZeroShift(self._config)
            m.d.comb += [peak_exp.t.eq(self.row_max[n] - self.seg_max[n]), lz.peak.eq(peak_exp.e),
                         self.z[n].eq(lz.z)]
        return m
