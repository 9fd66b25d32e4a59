"""Attention engine: a layer of heads of block-sparse, mixed-precision attention, each driven by its plan.

Golden twin: :func:`paro.sw.golden.attention_head` per head (every integer, per query block
:func:`paro.sw.golden.attention_block_row`), :func:`paro.sw.golden.layer_sequencer` for the order of heads.
This file only wires the blocks; each block's file states its cycle behaviour, has a golden twin and a test:

====================================== ==================================================================
block                                  does
====================================== ==================================================================
:class:`~.axi_lite.AxiLiteSlave`       AXI4-Lite control port onto the register bus
:class:`~.registers.RegisterFile`      register bus, control registers, status, total and per-head counters
:class:`~.sequencer.LayerSequencer`    one start: checks every descriptor, then runs the heads in turn
:class:`~.descriptor.DescriptorUnit`   the current head's descriptor, and its checks
:class:`~.block_table.BlockTable`      the current head's per-block multipliers (read from memory)
:class:`~.fetcher.Fetcher`             descriptors, tables, bitmaps, Q, K, V (kept blocks, cache misses only)
:class:`~.mem_reader.MemoryReader`     AXI4 read bursts to token rows
:class:`~.mem_writer.MemoryWriter`     output codes to AXI4 write bursts
:class:`~.controller.EngineController` the FSM: loads, walks kept blocks, issues tiles
:class:`~.scheduler.BlockScheduler`    two bitmap rows on chip; emits a query row's kept key blocks
:class:`~.operand_feed.OperandFeed`    issue stage: array operands (with K reduction and P lanes), row sums
:class:`~.array.SystolicArray`         the PE array: one tile ``C = A B^T`` at a time
:class:`~.tile_queue.TileQueue`        descriptors of tiles in flight, matched to drained beats
:class:`~.row_buffer.RowBuffer`        the K, Q (in banks: a word per lane) and V (a row) buffers
:class:`~.score_buffer.ScoreBuffer`    the score buffer, in banks: R scores written, a score per lane read
:class:`~.score_unit.ScoreUnit`        pass A: scaled scores into the score buffer, row and segment maxima
:class:`~.accumulator.OutputAccumulator` pass B: scaled PV columns into the output accumulators
:class:`~.output_stage.OutputStage`    reciprocals and output codes (to the memory writer)
:class:`~.spec_control.SpecControl`    (``spec_lanes`` builds) SimPicker's block speculation of each row
:class:`~.lut_path.LutPath`            (``lut_path`` builds) unimportant blocks' PV through the LUT multiplier
====================================== ==================================================================

Interfaces
----------
* ``m_axi``: AXI4 master (``config.axi_data_bits`` data). Reads the descriptor list, and per head its block
  table, bitmap rows, Q, K and V (``int8 [tokens, head_dim]``); writes the output codes (``int16``) at
  ``O_ADDR``; layout and burst rules in :mod:`paro.sw.contract`. Only kept K and V blocks are read, and only
  when the K/V block cache (``kv_cache_blocks`` slots) does not hold them.
* ``axil``: AXI4-Lite control (map in :mod:`paro.sw.contract`). Write ``DESC_ADDR`` and ``N_HEADS``, then 1
  to ``START``; ``done`` rises when the last head's last output burst has been answered, or when a descriptor
  was refused (``STATUS`` error, ``ERROR``; nothing written). Nothing on chip grows with the sequence squared.

Dataflow per query block i (two-pass softmax that stores S)
-----------------------------------------------------------
1. **Pass A** (QK^T): the :class:`~.scheduler.BlockScheduler` emits row i's kept key blocks (0-bit blocks are
   never fetched), each ``(B/R) x (B/(C*ppc))`` array tiles of depth ``head_dim`` (INT8, or INT4/INT2 with K
   reduced). Each drained column of scores is scaled (``x = round(S * cq_i * ck_j / 2**score_shift)``, times
   16 or 64 for 4- or 2-bit K) into the score buffer, updates the row maxima and writes the segment maxima.
2. **Pass B** (softmax and PV): per kept block and group of ``C*ppc`` queries, ``head_dim / R`` PV tiles of
   depth ``B`` take ``P`` from the exponent units and quantizers (each lane's shift ``z`` from its row and
   segment maxima; row sums on the first); each drained column is scaled by the block's V multiplier, shifted
   by ``z`` and added into the output accumulators (a LUT-path block's PV: :class:`~.lut_path.LutPath`).
3. **Output**: per query, ``r = floor(2**recip_bits / l)`` and the codes
   ``clip(round(round(A / 2**pre) * r / 2**final_shift))`` go to memory at ``O_ADDR``.

S is stored, not recomputed (a second QK^T pass caps utilization at 2/3) nor online (rescaling changes the
golden integers): ``block_size x max_kept_keys`` 32-bit scores and ``block_size`` per kept block segment maxima.

Cycle behaviour (each block's file states its own; :mod:`paro.sw.cycles` models them, ``paro simulate``
measures them): the array takes a beat a cycle through the feed's two stages. It waits a cycle per kept block
and pass, for the pass switches (the array's drain), for fetches the prefetches and hints did not hide, for the
output stage where the next block's pass A is shorter, and per head for the descriptor and table reads.
Overlapped with compute: the next Q block and bitmap row, V after K, the hinted next kept block, and each
query block's output and write-back (beside the next block's Q load and pass A; pass B waits for them).
"""

from amaranth import Module, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_WIDTH
from paro.sw.contract import OUTPUT_CODE_BYTES, SPEC_LUT_PATH, engine_buffers, engine_row_buffer

from .accumulator import OutputAccumulator
from .array import SystolicArray
from .axi4 import axi4_signature, connect_members
from .axi_lite import AxiLiteSignature, AxiLiteSlave
from .block_table import BlockTable
from .component import EngineBlock
from .controller import EngineController
from .descriptor import DescriptorUnit
from .fetcher import Fetcher
from .lut_path import LutPath
from .mem_reader import MemoryReader
from .mem_writer import MemoryWriter
from .operand_feed import OperandFeed
from .output_stage import OutputStage
from .registers import RegisterFile
from .row_buffer import RowBuffer
from .scheduler import BlockScheduler
from .score_buffer import ScoreBuffer
from .score_unit import ScoreUnit
from .sequencer import LayerSequencer
from .spec_control import SpecControl
from .tile_queue import TileQueue

__all__ = ["AttentionEngine", "engine_signature"]


def engine_signature(config):
    """The engine's ports: the AXI4 memory master, the AXI4-Lite control slave, ``busy`` and ``done``."""
    return wiring.Signature({"m_axi": Out(axi4_signature(config.axi_data_bits)), "axil": In(AxiLiteSignature),
                             "busy": Out(1), "done": Out(1)})


class AttentionEngine(EngineBlock):
    def __init__(self, config):
        super().__init__(config, engine_signature(config))

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        blocks = {"control": AxiLiteSlave(), **{name: block(cfg) for name, block in (
            ("registers", RegisterFile), ("controller", EngineController), ("scheduler", BlockScheduler),
            ("feed", OperandFeed), ("array", SystolicArray), ("tiles", TileQueue), ("score_unit", ScoreUnit),
            ("accumulator", OutputAccumulator), ("output_stage", OutputStage), ("fetcher", Fetcher),
            ("reader", MemoryReader), ("writer", MemoryWriter), ("sequencer", LayerSequencer),
            ("descriptor", DescriptorUnit), ("block_table", BlockTable))}}
        for name, block in blocks.items():
            m.submodules[name] = block
        (control, regs, ctrl, sched, feed, array, tiles, score, acc, out, fetch, reader, writer, seq, desc,
         table) = blocks.values()

        # Buffers (sizes from the contract): K (the cache's slots) and Q (two query blocks) in banks, one per
        # reading lane; V (the cache's slots), read a row at a time; scores (B x max_kept_keys) in banks;
        # segment maxima (B per kept block).
        segments = engine_buffers(cfg)["segment_buffer"]["entries"]
        row_buffers = {}
        for name in ("k_buffer", "q_buffer", "v_buffer"):
            geometry = engine_row_buffer(cfg, name)
            m.submodules[name] = row_buffers[name] = RowBuffer(cfg, geometry["rows"], geometry["readers"])
        kbuf, qbuf, vbuf = row_buffers["k_buffer"], row_buffers["q_buffer"], row_buffers["v_buffer"]
        m.submodules.score_buffer = sbuf = ScoreBuffer(cfg)
        m.submodules.segment_buffer = gmem = Memory(shape=data.ArrayLayout(signed(SCORE_WIDTH), cfg.block_size),
                                                    depth=segments, init=[])
        g_wr = gmem.write_port()
        g_rd = gmem.read_port(transparent_for=(g_wr,))   # a one-block row's pass B may read it as it is written

        wiring.connect(m, wiring.flipped(self.axil), control.axil)
        wiring.connect(m, control.csr, regs.bus)
        for source, sink in ((sched.o, ctrl.kept), (feed.a, array.a), (feed.b, array.b), (array.c, tiles.c),
                             (out.o, writer.o), (ctrl.want, fetch.want), (fetch.req, reader.req),
                             (reader.row, fetch.row)):
            wiring.connect(m, source, sink)
        m.d.comb += [ctrl.slot.eq(fetch.slot), fetch.hint.eq(ctrl.hint), fetch.hint_valid.eq(ctrl.hint_valid)]
        connect_members(m, self.m_axi, reader.axi)
        connect_members(m, self.m_axi, writer.axi)
        row_end = desc.row_first + desc.row_count
        if cfg.lut_path:
            self._lut_path(m, blocks)
        else:
            m.d.comb += [acc.valid.eq(tiles.pv_valid), acc.column.eq(tiles.column), acc.tile.eq(tiles.tile),
                         acc.beat.eq(tiles.beat)]
        if cfg.spec_lanes:
            self._speculation(m, blocks, row_end)
        else:
            wiring.connect(m, seq.meta, fetch.meta)
        m.d.comb += [
            self.busy.eq(seq.busy), self.done.eq(seq.done),
            # register file <-> sequencer, descriptor unit
            seq.start.eq(regs.start), seq.n_heads.eq(regs.n_heads), seq.list_error.eq(desc.list_error),
            seq.desc_error.eq(desc.error), seq.head_busy.eq(ctrl.busy),
            desc.desc_addr.eq(regs.desc_addr), desc.n_heads.eq(regs.n_heads),
            *(getattr(regs, name).eq(getattr(seq, name)) for name in (
                "busy", "done", "error", "error_code", "error_head", "heads_done", "clear", "head", "head_start",
                "head_active", "head_store")),
            regs.beat.eq(feed.beat), regs.kept8.eq(sched.kept8), regs.kept4.eq(sched.kept4),
            regs.kept2.eq(sched.kept2), regs.skipped.eq(sched.skipped),
            # the current head's descriptor -> controller, scheduler
            ctrl.start.eq(seq.run), ctrl.n_tokens.eq(desc.n_tokens), ctrl.row_first.eq(desc.row_first),
            ctrl.row_end.eq(row_end),
            sched.wr_en.eq(fetch.bitmap_we), sched.wr_addr.eq(fetch.wr_addr), sched.wr_data.eq(fetch.wr_data),
            sched.n_blocks.eq(desc.n_blocks), sched.start.eq(ctrl.sched_start),
            sched.row.eq(ctrl.sched_row), sched.count.eq(ctrl.sched_count),
            # memory: fetches into the buffers and tables, output codes out, byte counters
            fetch.start.eq(seq.head_start), fetch.row_end.eq(row_end),
            fetch.q_addr.eq(desc.q_addr), fetch.k_addr.eq(desc.k_addr), fetch.v_addr.eq(desc.v_addr),
            fetch.bitmap_addr.eq(desc.bitmap_addr), fetch.table_addr.eq(desc.table_addr),
            fetch.desc_addr.eq(regs.desc_addr), fetch.bitmap_lines.eq(desc.bitmap_lines),
            fetch.table_lines.eq(desc.table_lines),
            writer.start.eq(ctrl.out_start),
            writer.addr.eq(desc.o_addr + ctrl.sched_row * (cfg.block_size * cfg.head_dim * OUTPUT_CODE_BYTES)),
            regs.read_beat.eq(reader.beat), regs.write_beat.eq(writer.beat),
            # issue side
            feed.cmd.eq(ctrl.cmd), feed.fire.eq(ctrl.fire), ctrl.advance.eq(feed.advance),
            ctrl.feed_busy.eq(feed.busy),
            feed.reset_sums.eq(ctrl.reset_sums), ctrl.row_max.eq(score.row_max),
            vbuf.rd_row.eq(ctrl.v_addr), vbuf.rd_en.eq(feed.advance), feed.v_row.eq(vbuf.rd_data[0]),
            ctrl.tile_room.eq(tiles.room), ctrl.tiles_empty.eq(tiles.empty),
            tiles.push.eq(ctrl.tile), tiles.push_en.eq(ctrl.tile_push),
            # drain side
            score.valid.eq(tiles.qk_valid), score.column.eq(tiles.column),
            score.tile.eq(tiles.tile), score.beat.eq(tiles.beat), score.cq.eq(ctrl.cq),
            score.score_shift.eq(desc.score_shift), score.n_tokens.eq(desc.n_tokens), score.reset.eq(ctrl.reset_max),
            g_wr.en.eq(score.seg_wr_en), g_wr.addr.eq(score.seg_wr_addr), g_wr.data.eq(score.seg_wr_data),
            g_rd.addr.eq(ctrl.seg_addr), ctrl.seg_data.eq(g_rd.data),
            ctrl.acc_pending.eq(acc.pending), ctrl.score_pending.eq(score.pending),
            # output
            out.start.eq(ctrl.out_start), ctrl.out_idle.eq(out.idle & writer.idle),
            out.final_shift.eq(desc.final_shift), out.row_sum.eq(feed.row_sum),
            acc.rd_addr.eq(out.rd_addr), acc.rd_en.eq(out.rd_en), out.rd_data.eq(acc.rd_data),
        ]
        # Every fetched line goes to one buffer (its write enable), at the fetcher's address.
        for enable, (en, addr, line) in ((fetch.desc_we, (desc.we, desc.addr, desc.data)),
                                         (fetch.table_we, (table.we, table.addr, table.data)),
                                         (fetch.k_we, (kbuf.wr_en, kbuf.wr_addr, kbuf.wr_data)),
                                         (fetch.v_we, (vbuf.wr_en, vbuf.wr_addr, vbuf.wr_data)),
                                         (fetch.q_we, (qbuf.wr_en, qbuf.wr_addr, qbuf.wr_data))):
            m.d.comb += [en.eq(enable), addr.eq(fetch.wr_addr), line.eq(fetch.wr_data)]
        for t in ("cq", "ck", "cv8", "cv4"):
            m.d.comb += [getattr(table, f"{t}_addr").eq(getattr(ctrl, f"{t}_addr")),
                         getattr(ctrl, f"{t}_data").eq(getattr(table, f"{t}_data"))]
        m.d.comb += [
            qbuf.rd_row.eq(ctrl.q_row), qbuf.rd_word.eq(ctrl.q_word), qbuf.rd_en.eq(feed.advance),
            feed.q_words.eq(qbuf.rd_data),
            kbuf.rd_row.eq(ctrl.k_row), kbuf.rd_word.eq(ctrl.k_word), kbuf.rd_en.eq(feed.advance),
            feed.k_words.eq(kbuf.rd_data),
            sbuf.wr_en.eq(score.wr_en), sbuf.wr_group.eq(score.wr_group), sbuf.wr_key.eq(score.wr_key),
            sbuf.wr_data.eq(score.wr_data),
            sbuf.rd_query.eq(ctrl.s_query), sbuf.rd_key.eq(ctrl.s_key), sbuf.rd_en.eq(feed.advance),
            feed.scores.eq(sbuf.rd_data),
        ]
        return m

    def _lut_path(self, m, blocks):
        """The LUT path (a ``lut_path`` build): beats from the feed; its accumulator beats share the accumulator's
        input with the drained PV columns (never at once: a LUT-path block runs only while the array is idle)."""
        m.submodules.lut_path = lut = LutPath(self._config)
        feed, ctrl, tiles, acc = blocks["feed"], blocks["controller"], blocks["tiles"], blocks["accumulator"]
        wiring.connect(m, feed.lut, lut.i)
        m.d.comb += [lut.cv.eq(ctrl.lut_cv), lut.kept_index.eq(ctrl.lut_kept_index), ctrl.lut_busy.eq(lut.busy),
                     blocks["scheduler"].lut_marks.eq(blocks["descriptor"].spec == SPEC_LUT_PATH),
                     acc.valid.eq(tiles.pv_valid | lut.acc_valid),
                     *(getattr(acc, name).eq(Mux(lut.acc_valid, getattr(lut, name), getattr(tiles, name)))
                       for name in ("column", "tile", "beat"))]

    def _speculation(self, m, blocks, row_end):
        """The speculation control (a ``spec_lanes`` build): its K pool wants share the fetcher's ``meta``
        stream with the layer sequencer's (never at once: the sequencer asks only between heads); it marks
        skipped blocks in the scheduler and holds each row's walk until the row is speculated."""
        m.submodules.spec_control = spec = SpecControl(self._config)
        seq, fetch, desc, table = blocks["sequencer"], blocks["fetcher"], blocks["descriptor"], blocks["block_table"]
        ctrl, sched, regs = blocks["controller"], blocks["scheduler"], blocks["registers"]
        m.d.comb += [
            fetch.meta.valid.eq(seq.meta.valid | spec.pool.valid),
            fetch.meta.payload.eq(Mux(seq.meta.valid, seq.meta.payload, spec.pool.payload)),
            seq.meta.ready.eq(fetch.meta.ready & seq.meta.valid),
            spec.pool.ready.eq(fetch.meta.ready & ~seq.meta.valid),
            spec.start.eq(seq.run), spec.spec.eq(desc.spec), spec.important.eq(desc.spec_important),
            spec.negligible.eq(desc.spec_negligible), spec.n_blocks.eq(desc.n_blocks), spec.n_tokens.eq(desc.n_tokens),
            spec.score_shift.eq(desc.score_shift), spec.row_first.eq(desc.row_first), spec.row_end.eq(row_end),
            spec.q_we.eq(fetch.q_we), spec.pool_we.eq(fetch.pool_we), spec.bitmap_we.eq(fetch.bitmap_we),
            spec.wr_addr.eq(fetch.wr_addr), spec.wr_data.eq(fetch.wr_data), spec.q_tags.eq(fetch.q_tags),
            table.spec_cq_addr.eq(spec.cq_addr), spec.cq_data.eq(table.spec_cq_data),
            table.spec_ck_addr.eq(spec.ck_addr), spec.ck_data.eq(table.spec_ck_data),
            sched.mark_en.eq(spec.mark_en), sched.mark_low.eq(spec.mark_low), sched.mark_half.eq(spec.mark_half),
            sched.mark_j.eq(spec.mark_j),
            ctrl.spec_row_ready.eq(spec.row_ready), regs.spec_busy.eq(spec.busy), regs.spec_wait.eq(ctrl.spec_wait),
        ]
