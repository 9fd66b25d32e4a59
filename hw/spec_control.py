"""Speculation control: SimPicker's block speculation inside the engine, for a head whose descriptor has ``SPEC``.

Golden twin: :func:`paro.sw.golden.spec_control` (the bitmap less the blocks classed negligible, with
``SPEC`` 2 the unimportant ones at 4 bits, with 3 on the LUT path). The speculation's arithmetic is that of its parts:
:class:`~.pooling.PoolingUnit` (the rounded mean of a block's rows), :class:`~.speculator.Speculator` (pooled
products on ``spec_lanes`` multipliers, the score unit's scaling) and its
:class:`~.speculation.SpeculationUnit` (estimated masses, classes).

Per head (``start`` with ``spec``, the descriptor's ``SPEC``, not 0; with 0 it does nothing and every row is
ready at once):

1. **Pool K.** ``pool`` asks the :class:`~.fetcher.Fetcher` for key block ``0 .. n_blocks - 1``'s K rows in
   turn (``WANT_POOL``, one want at a time, held until ready); the fetched rows (``pool_we`` with
   ``wr_data``) go through the pooling unit, and each pooled row goes with its ``CK`` (table port
   ``ck``) into the speculator's key memory: ``n_blocks * B`` rows of memory traffic once per head.
2. **Rows**, per query block ``r`` from ``row_first`` to ``row_end - 1``: the fetcher's Q rows of every query
   block (``q_we``, half ``wr_addr >= B``) go through the same pooling unit, the pooled row kept per Q half;
   the bitmap lines it writes (``bitmap_we``) give the allowed bits per half (entry non-zero). Once the
   fetcher holds block ``r`` (``q_tags[r % 2] == r``, Q and bitmap row), one row beat (pooled Q, ``CQ`` of
   ``r`` from table port ``cq``, ``score_shift``, ``n_blocks``, ``n_tokens``, allowed bits) goes to the
   speculator; each class beat it gives back that is ``SPEC_SKIP`` marks the block skipped in the
   :class:`~.scheduler.BlockScheduler`'s half ``r % 2`` (``mark_en``, ``mark_half``, ``mark_j``), and with
   ``SPEC`` 2 or 3 each ``SPEC_LUT`` (unimportant) one cheap (``mark_low``: the scheduler runs it at 4 bits,
   or with ``SPEC`` 3 on the LUT path). After the row's last class ``row_ready`` becomes ``r + 1``: the
   controller walks row ``r`` only once ``row_ready > r``. Important blocks keep their bits, and unimportant
   ones with ``SPEC`` 1.

Timing: the pool pass takes the K fetches (``B`` lines each, as the fetcher serves them), a row
``n * (head_dim / spec_lanes + 2) + n**2 + 4n`` cycles from taking its beat to its last class (``n =
n_blocks``; :mod:`paro.hw.speculator`, :func:`paro.sw.cycles.spec_row_cycles`). Row ``r + 1``'s speculation
runs while the engine computes row ``r`` (its Q and bitmap row are prefetched), so only the first row's, and
any row longer to speculate than to compute, is exposed: the controller counts the cycles it waits
(``SPEC_WAIT``); ``busy`` (``SPEC_BUSY``) is high while a pass or a row is under way.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.errors import ParoError
from paro.sw.contract import DESCRIPTOR, SPEC_LOW_BITS, engine_buffers
from paro.sw.golden import SPEC_LUT, SPEC_SKIP

from .component import EngineBlock
from .fetcher import write_lines
from .kv_cache import WANT_POOL, want_layout
from .operand_feed import row_layout
from .pooling import PoolingUnit, pooled_layout
from .speculator import Speculator

__all__ = ["SpecControl"]


class SpecControl(EngineBlock):
    @classmethod
    def check(cls, config):
        super().check(config)
        if not config.spec_lanes:
            raise ParoError("the speculation control needs a build with spec_lanes > 0 (--spec-lanes)")
        Speculator.check(config, config.spec_lanes)

    def __init__(self, config):
        nb = config.max_blocks
        widths = {f.name: f.width(config) for f in DESCRIPTOR}
        super().__init__(config, {
            "start": In(1), "spec": In(widths["SPEC"]), "important": In(widths["SPEC_IMPORTANT"]),
            "negligible": In(widths["SPEC_NEGLIGIBLE"]),
            "n_blocks": In(range(nb + 1)), "n_tokens": In(range(config.max_seq_len + 1)), "score_shift": In(6),
            "row_first": In(range(nb)), "row_end": In(range(nb + 1)),
            "pool": Out(stream.Signature(want_layout(config))),
            "q_we": In(1), "pool_we": In(1), "bitmap_we": In(1), "wr_addr": In(range(write_lines(config))),
            "wr_data": In(row_layout(config)), "q_tags": In(data.ArrayLayout(range(nb + 1), 2)),
            "cq_addr": Out(range(nb)), "cq_data": In(16), "ck_addr": Out(range(nb)), "ck_data": In(16),
            "mark_en": Out(1), "mark_low": Out(1), "mark_half": Out(1), "mark_j": Out(range(nb)),
            "row_ready": Out(range(nb + 1)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        nb, B, d = cfg.max_blocks, cfg.block_size, cfg.head_dim
        half_lines = engine_buffers(cfg)["bitmap_rows"]["entries"] // 2
        m.submodules.pooling = pooling = PoolingUnit(cfg)
        m.submodules.speculator = spec = Speculator(cfg, cfg.spec_lanes)

        # Pooling: Q rows (any query block the fetcher brings) and the pool pass's K rows share the unit.
        from_q, q_half = Signal(), Signal()
        pooled_q = [Signal(pooled_layout(cfg), name=f"pooled_q{h}") for h in range(2)]
        k_count = Signal(range(nb + 1))
        m.d.comb += [pooling.i.valid.eq(self.q_we | self.pool_we), pooling.i.payload.eq(self.wr_data),
                     pooling.o.ready.eq(1), self.ck_addr.eq(k_count),
                     spec.k_wr_addr.eq(k_count), spec.k_wr_data.k.eq(pooling.o.payload),
                     spec.k_wr_data.ck.eq(self.ck_data)]
        with m.If(pooling.i.valid):
            m.d.sync += [from_q.eq(self.q_we), q_half.eq(self.wr_addr >= B)]
        with m.If(pooling.o.valid):
            with m.If(from_q):
                with m.If(q_half):
                    m.d.sync += pooled_q[1].eq(pooling.o.payload)
                with m.Else():
                    m.d.sync += pooled_q[0].eq(pooling.o.payload)
            with m.Else():
                m.d.comb += spec.k_wr_en.eq(1)
                m.d.sync += k_count.eq(k_count + 1)

        # Allowed bits per Q half, from the bitmap lines the fetcher writes (entry non-zero).
        allowed = Signal(2 * half_lines * d)
        with m.If(self.bitmap_we):
            m.d.sync += allowed.word_select(self.wr_addr, d).eq(Cat(*(self.wr_data[n] != 0 for n in range(d))))

        row = Signal(range(nb + 1))
        half = row[0]
        j = Signal(range(nb))
        m.d.comb += [self.cq_addr.eq(row), spec.important.eq(self.important), spec.negligible.eq(self.negligible),
                     spec.i.payload.q.eq(Mux(half, pooled_q[1], pooled_q[0])),
                     spec.i.payload.cq.eq(self.cq_data), spec.i.payload.shift.eq(self.score_shift),
                     spec.i.payload.n_blocks.eq(self.n_blocks), spec.i.payload.n_tokens.eq(self.n_tokens),
                     spec.i.payload.allowed.eq(allowed.word_select(half, half_lines * d)[:nb]),
                     self.mark_half.eq(half), self.mark_j.eq(j)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [row.eq(self.row_first), j.eq(0), k_count.eq(0),
                                 self.row_ready.eq(Mux(self.spec != 0, self.row_first, self.row_end))]
                    with m.If(self.spec != 0):
                        m.next = "POOL"
            with m.State("POOL"):                       # one K block at a time, until all are asked for
                m.d.comb += [self.pool.valid.eq(1), self.pool.payload.kind.eq(WANT_POOL),
                             self.pool.payload.block.eq(j)]
                with m.If(self.pool.ready):
                    m.d.sync += j.eq(j + 1)
                    with m.If(j + 1 == self.n_blocks):
                        m.next = "POOLED"
            with m.State("POOLED"):                     # the last pooled K row is in
                with m.If(k_count == self.n_blocks):
                    m.next = "ROW"
            with m.State("ROW"):                        # row `row`'s Q and bitmap on chip: speculate it
                m.d.comb += spec.i.valid.eq(self.q_tags[half] == row)
                with m.If(spec.i.valid & spec.i.ready):
                    m.d.sync += j.eq(0)
                    m.next = "CLASSES"
            with m.State("CLASSES"):
                cls = spec.o.payload.cls
                low = (cls == SPEC_LUT) & (self.spec >= SPEC_LOW_BITS)        # unimportant, on a cheap path
                m.d.comb += [spec.o.ready.eq(1), self.mark_low.eq(low),
                             self.mark_en.eq(spec.o.valid & ((cls == SPEC_SKIP) | low))]
                with m.If(spec.o.valid):
                    m.d.sync += j.eq(j + 1)
                    with m.If(spec.o.payload.last):
                        m.d.sync += [row.eq(row + 1), self.row_ready.eq(row + 1)]
                        m.next = "ROW"
                        with m.If(row + 1 == self.row_end):
                            m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

