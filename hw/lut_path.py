"""LUT path: the PV of a speculation's unimportant block through SimPicker's LUT multiplier, into the output
accumulator as an 8-bit block's drained columns would go.

Golden twin: :func:`paro.sw.golden.lut_path` (per query row ``u = round(w * 127 * 2**z / 2**exp_bits)`` with
``w`` the exact sum over the block's keys of :func:`~paro.sw.golden.lut_fp` numerators times INT8 V, ``z``
the row's segment shift), which :func:`~paro.sw.golden.lut_block_accumulate` adds with the block's ``cv8``.

Input, stream ``i`` (from the :class:`~.operand_feed.OperandFeed`'s second stage): one beat per key ``k`` of
a query group of ``C`` (= ``cols``) queries, keys in order: the lanes' numerators ``e`` and segment shifts
``z``, the key's whole V row, the query group, and ``first`` / ``last`` (``k = 0`` / ``k = B - 1``). The
block's ``cv`` and ``kept_index`` are held by the controller while the block runs.

Per beat the path runs ``C`` operands (one a query, :func:`fp_operand`, one rounding unit shared by the
lanes) through the :class:`~.lut_multiplier.LutMultiplier`, each over the V row in ``d / L`` chunks of ``L =
lut_lanes`` lanes: ``C x d / L`` cycles a beat, one chunk a cycle with no bubble between beats (the next
beat's first operand builds its table while the current beat's last chunk is served). Each chunk's products
add into the sums ``w`` (a memory of ``C x d / L`` words of ``L`` sums, read as the chunk enters the
multiplier, written as its products leave; key 0 overwrites). On the group's last key the sum is not written
back but scaled, ``u = round(((w << 7) - w) / 2**(exp_bits - z))``, into the emission memory, which drains
at ``R`` head dimensions a cycle as output-accumulator beats (query lane ``n``, dimension group, the block's
``cv`` and the lane's ``z``): ``C x d / R`` beats a group, overlapped with the next group's keys. A group's
last key waits to start while the previous group still drains (never on a block whose groups take longer
than their drain). ``busy`` is high while anything is held, in the multiplier or still to drain.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.errors import ParoError
from paro.sw.golden import P_LEVELS, P_SHIFT_MAX

from .component import EngineBlock
from .lut_multiplier import LutMultiplier, fp_layout
from .rounding import round_shift
from .tile_queue import cv_width, tile_layout
from .word_mux import word_mux

__all__ = ["LutPath", "lut_beat_layout", "fp_operand"]


def lut_beat_layout(config):
    """One key of a query group: ``cols`` numerators and segment shifts, the key's V row, group, first, last."""
    C = config.cols
    return data.StructLayout({"e": data.ArrayLayout(unsigned(config.exp_bits + 1), C),
                              "z": data.ArrayLayout(range(P_SHIFT_MAX + 1), C),
                              "v": data.ArrayLayout(signed(8), config.head_dim),
                              "query_group": range(config.block_size), "first": 1, "last": 1})


def fp_operand(m, config, e):
    """:func:`paro.sw.golden.lut_fp` of the numerator ``e``: its bit length, the rounded shift to ``M + 1``
    significant bits and the carry's renormalisation (combinational). Returns a :func:`fp_layout` value."""
    top = config.lut_mant_bits + 1
    length = Signal(range(config.exp_bits + 2), name="e_length")
    for k in range(len(e)):                      # the highest set bit wins
        length = Mux(e[k], k + 1, length)
    exp = Signal(range(config.lut_exp_max + 1), name="fp_exp")
    rounded = Signal(top + 1, name="fp_rounded")
    m.d.comb += [exp.eq(Mux(length > top, length - top, 0)), rounded.eq(round_shift(e, exp))]
    out = Signal(fp_layout(config), name="fp")
    carry = rounded[top]
    m.d.comb += [out.mant.eq(Mux(carry, rounded >> 1, rounded)), out.exp.eq(exp + carry)]
    return out


class LutPath(EngineBlock):
    @classmethod
    def check(cls, config):
        super().check(config)
        if not config.lut_path:       # the configuration checks lut_lanes and the rate rule of a lut_path build
            raise ParoError("the LUT path needs a build with lut_path (--lut-path --spec-lanes N)")

    def __init__(self, config):
        super().__init__(config, {
            "i": In(stream.Signature(lut_beat_layout(config))),
            "cv": In(cv_width(config)), "kept_index": In(range(config.max_kept_blocks + 1)),
            "acc_valid": Out(1), "column": Out(data.ArrayLayout(signed(config.acc_width), config.rows)),
            "tile": Out(tile_layout(config)), "beat": Out(range(config.engine_lanes)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, B, d, L = cfg.rows, cfg.cols, cfg.block_size, cfg.head_dim, cfg.lut_lanes
        chunks, pieces = d // L, L // R
        entries = C * chunks
        sum_width = cfg.exp_bits + 8 + B.bit_length()       # |w| <= B * 2**exp_bits * 128
        m.submodules.multiplier = lut = LutMultiplier(cfg)
        m.d.comb += lut.o.ready.eq(1)                        # the sums take a chunk every cycle

        # Issue: the held beat's operands (and, once they are all given, the next beat's first) and chunks.
        cur = Signal(lut_beat_layout(cfg))
        held = Signal()
        given = Signal(range(C + 1))         # operands of the held beat given to the multiplier
        ahead = Signal()                     # the next beat's first operand is given too
        lane, chunk = Signal(range(C)), Signal(range(chunks))
        draining = Signal()
        take_v, beat_done = Signal(), Signal()
        own = given < C
        m.d.comb += [lut.p.valid.eq(held & (own | (self.i.valid & ~ahead))),
                     lut.p.payload.eq(fp_operand(m, cfg, Mux(own, cur.e[given[:max(1, (C - 1).bit_length())]],
                                                              self.i.payload.e[0]))),
                     lut.v.valid.eq(held & ~(cur.last & (lane == 0) & (chunk == 0) & draining)),
                     lut.v.payload.v.as_value().eq(word_mux(cur.v.as_value(), chunk, 8 * L) if chunks > 1
                                                   else cur.v.as_value()),
                     lut.v.payload.last.eq(chunk == chunks - 1),
                     take_v.eq(lut.v.valid & lut.v.ready),
                     beat_done.eq(take_v & (lane == C - 1) & (chunk == chunks - 1)),
                     self.i.ready.eq(~held | beat_done)]
        give = lut.p.valid & lut.p.ready
        with m.If(give):
            with m.If(own):
                m.d.sync += given.eq(given + 1)
            with m.Else():
                m.d.sync += ahead.eq(1)
        with m.If(take_v):
            m.d.sync += chunk.eq(chunk + 1)
            with m.If(chunk == chunks - 1):
                m.d.sync += [chunk.eq(0), lane.eq(lane + 1)]
                with m.If(lane == C - 1):
                    m.d.sync += [lane.eq(0), held.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [cur.eq(self.i.payload), held.eq(1), given.eq(ahead | (give & ~own)), ahead.eq(0)]

        # The chunk in the multiplier: which sums its products go to, registered as it enters.
        inflight = Signal(data.StructLayout({"addr": range(entries), "first": 1, "last": 1,
                                             "z": range(P_SHIFT_MAX + 1), "shift": range(cfg.exp_bits + 1),
                                             "query_group": range(B)}))
        with m.If(take_v):
            m.d.sync += [inflight.addr.eq(lane * chunks + chunk), inflight.first.eq(cur.first),
                         inflight.last.eq(cur.last), inflight.z.eq(cur.z[lane]),
                         inflight.shift.eq((cfg.exp_bits - cur.z[lane]).as_unsigned()),
                         inflight.query_group.eq(cur.query_group)]
        m.submodules.sums = sums = Memory(shape=data.ArrayLayout(signed(sum_width), L), depth=entries, init=[])
        sum_rd, sum_wr = sums.read_port(), sums.write_port()
        m.d.comb += [sum_rd.addr.eq(lane * chunks + chunk), sum_rd.en.eq(take_v),
                     sum_wr.addr.eq(inflight.addr), sum_wr.en.eq(lut.o.valid & ~inflight.last)]
        m.submodules.emission = emission = Memory(shape=data.ArrayLayout(signed(cfg.acc_width), L), depth=entries,
                                                  init=[])
        em_wr, em_rd = emission.write_port(), emission.read_port()
        m.d.comb += [em_wr.addr.eq(inflight.addr), em_wr.en.eq(lut.o.valid & inflight.last)]
        for k in range(L):
            total = Signal(signed(sum_width), name=f"w{k}")
            m.d.comb += [total.eq(Mux(inflight.first, 0, sum_rd.data[k]) + lut.o.payload.products[k]),
                         sum_wr.data[k].eq(total),
                         em_wr.data[k].eq(round_shift((total << 7) - total, inflight.shift))]
        assert P_LEVELS[8] == (1 << 7) - 1

        # Emission: the group's scaled sums drain as accumulator beats, R dims a cycle, chasing the writes.
        written, drained = Signal(range(entries + 1)), Signal(range(entries + 1))
        piece = Signal(range(pieces))
        lane_z = Signal(data.ArrayLayout(range(P_SHIFT_MAX + 1), C))
        group = Signal(range(B))
        with m.If(em_wr.en):
            m.d.sync += written.eq(Mux(inflight.addr == 0, 1, written + 1))
            with m.If(inflight.addr == 0):
                m.d.sync += [drained.eq(0), group.eq(inflight.query_group)]
            with m.If(inflight.addr % chunks == 0):
                m.d.sync += lane_z[inflight.addr // chunks].eq(inflight.z)
        reading = Signal()
        m.d.comb += [reading.eq(drained < written), em_rd.addr.eq(drained), em_rd.en.eq(1),
                     draining.eq(reading | self.acc_valid)]
        at = Signal(data.StructLayout({"entry": range(entries), "piece": range(pieces)}))
        m.d.sync += self.acc_valid.eq(reading)
        with m.If(reading):
            m.d.sync += [at.entry.eq(drained), at.piece.eq(piece), piece.eq(piece + 1)]
            with m.If(piece == pieces - 1):
                m.d.sync += [piece.eq(0), drained.eq(drained + 1)]
        query = at.entry // chunks
        m.d.comb += [self.column.as_value().eq(word_mux(em_rd.data.as_value(), at.piece, R * cfg.acc_width)
                                               if pieces > 1 else em_rd.data.as_value()),
                     self.beat.eq(query),
                     self.tile.pass_b.eq(1), self.tile.query_group.eq(group), self.tile.packing.eq(0),
                     self.tile.dim_group.eq((at.entry % chunks) * pieces + at.piece),
                     self.tile.kept_index.eq(self.kept_index), self.tile.cv.eq(self.cv),
                     *(self.tile.z[n].eq(lane_z[n]) for n in range(C)),
                     self.busy.eq(held | lut.o.valid | draining)]
        return m

