"""Segment shift: the leading-zero shift ``z`` of each P lane's (query, kept block) segment, for a query group.

Golden twin: :func:`paro.sw.golden.segment_shift` (``p_shift`` of the segment's largest numerator, which is
``2**-(row_max - seg_max)``: the exponent is monotone, so the largest numerator belongs to the largest score),
of each lane's query (:func:`~.p_lanes.lane_query_value`: query ``(group << packing) * C + n`` of lane ``n``).

Inputs: every query's row maximum (``row_max``, the score unit's) and segment maximum (``seg_max``, a segment
buffer entry, which the score unit writes in pass A) and the block's ``packing``. The unit works one query
group ahead of the controller, in three stages, ``config.engine_lanes`` lanes, for Fmax (the lane
multiplexers, the exponent's multiplier and the leading-zero count were one path of the tiny engine's ECP5
critical path):

1. each lane's row and segment maximum of query group ``group`` (a register) are picked and registered;
2. an :class:`~paro.hw.softmax.Exp2Unit` on ``row_max - seg_max``, its numerator registered;
3. a :class:`~paro.hw.softmax.LeadingZeroShift` on it gives the lanes' shifts.

Every stage loads at every edge. ``start`` sets ``group`` to 0; ``latch`` copies the lanes' shifts and row
maxima into the outputs ``z`` and ``lane_row_max`` (what the PV beats of the group carry) and moves
``group`` on by one. So after ``start`` the first group's values are ready to latch ``SHIFT_STAGES`` (3)
cycles later (the controller's ``B_SHIFT``), and each later group's as long as a group lasts 3 cycles (it
lasts at least ``B``). A segment with no real key has ``seg_max`` at the most negative score, so its
numerator is 0 and ``z = 0``.
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_WIDTH
from paro.sw.golden import P_SHIFT_MAX

from .component import ConfiguredComponent
from .p_lanes import lane_query_value
from .softmax import Exp2Unit, LeadingZeroShift

__all__ = ["SegmentShift"]


class SegmentShift(ConfiguredComponent):
    def __init__(self, config):
        queries = data.ArrayLayout(signed(SCORE_WIDTH), config.block_size)
        lanes = data.ArrayLayout(signed(SCORE_WIDTH), config.engine_lanes)
        super().__init__(config, {"row_max": In(queries), "seg_max": In(queries), "packing": In(2),
                                  "start": In(1), "latch": In(1), "lane_row_max": Out(lanes),
                                  "z": Out(data.ArrayLayout(range(P_SHIFT_MAX + 1), config.engine_lanes))})

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        group = Signal(range(cfg.block_size + 1))
        with m.If(self.latch):
            m.d.sync += group.eq(group + 1)
        with m.If(self.start):
            m.d.sync += group.eq(0)
        for n in range(cfg.engine_lanes):
            m.submodules[f"peak_exp{n}"] = peak_exp = Exp2Unit(cfg, SCORE_WIDTH + 1)
            m.submodules[f"lz{n}"] = lz = LeadingZeroShift(cfg)
            row_max, seg_max = Signal(signed(SCORE_WIDTH), name=f"row_max{n}"), Signal(signed(SCORE_WIDTH),
                                                                                       name=f"seg_max{n}")
            peak = Signal(unsigned(cfg.exp_bits + 1), name=f"peak{n}")
            m.d.sync += [row_max.eq(lane_query_value(cfg, self.row_max, n, self.packing, group)),
                         seg_max.eq(lane_query_value(cfg, self.seg_max, n, self.packing, group)),
                         peak.eq(peak_exp.e)]
            m.d.comb += [peak_exp.t.eq(row_max - seg_max), lz.peak.eq(peak)]
            with m.If(self.latch):
                m.d.sync += [self.lane_row_max[n].eq(row_max), self.z[n].eq(lz.z)]
        return m
