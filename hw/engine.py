"""Attention engine: one head of block-sparse, mixed-precision attention driven by a BlockPlan.

Golden twin: :func:`paro.sw.golden.attention_head` (every integer, per query block
:func:`paro.sw.golden.attention_block_row`). This file only wires the blocks; each block's file states
its own cycle behaviour and has its own golden twin and unit test:

====================================== ==================================================================
block                                  does
====================================== ==================================================================
:class:`~.axi_lite.AxiLiteSlave`       AXI4-Lite control port onto the register bus
:class:`~.registers.RegisterFile`      register bus, control registers, per-block tables, counters
:class:`~.fetcher.Fetcher`             Q, K and V rows into the buffers (kept blocks only, cache misses only)
:class:`~.mem_reader.MemoryReader`     AXI4 read bursts to token rows
:class:`~.mem_writer.MemoryWriter`     output codes to AXI4 write bursts
:class:`~.controller.EngineController` the FSM: loads, walks kept blocks, issues tiles, prescans
:class:`~.scheduler.BlockScheduler`    bitmap memory; emits a query row's kept key blocks
:class:`~.operand_feed.OperandFeed`    issue stage: array operands (with K reduction and P lanes), row sums
:class:`~.array.SystolicArray`         the PE array: one tile ``C = A B^T`` at a time
:class:`~.tile_queue.TileQueue`        descriptors of tiles in flight, matched to drained beats
:class:`~.score_unit.ScoreUnit`        pass A: scaled scores into the score buffer, row maxima
:class:`~.accumulator.OutputAccumulator` pass B: scaled PV columns into the output accumulators
:class:`~.output_stage.OutputStage`    reciprocals and output codes (to the memory writer)
====================================== ==================================================================

Interfaces
----------
* ``m_axi``: AXI4 master (:func:`~.axi4.axi4_signature`, ``config.axi_data_bits`` data; Verilog
  ``m_axi__araddr`` and so on). Reads Q, K and V (``int8 [tokens, head_dim]`` at ``Q_ADDR``, ``K_ADDR``,
  ``V_ADDR``) and writes the output codes (``int16 [tokens, head_dim]`` at ``O_ADDR``); layout and burst
  rules in :mod:`paro.sw.contract`. Only the K and V blocks the bitmap keeps are read, and only when the
  K/V block cache (``kv_cache_blocks`` slots, :class:`~.kv_cache.BlockCache`) does not hold them.
* Control: the AXI4-Lite slave ``axil`` (:data:`~.axi_lite.AxiLiteSignature`; Verilog ``axil__awaddr`` and
  so on; map and access rules in :mod:`paro.sw.contract`). Write the scalar registers (addresses included),
  the per-block multiplier tables and the bitmap, then write 1 to ``START``; ``done`` rises when the last
  output burst has been answered. Status and counters (bytes read and written included) are readable.

Dataflow per query block i (two-pass softmax that stores S)
-----------------------------------------------------------
1. **Pass A** (QK^T): the :class:`~.scheduler.BlockScheduler` emits the kept key blocks of row i (0-bit
   blocks are never fetched). Each block runs ``(B/R) x (B/(C*ppc))`` array tiles of depth ``head_dim``
   (INT8 mode, or INT4 mode with K reduced to 4 bits). Each drained column of scores goes through the
   scaling unit (``x = round(S * cq_i * ck_j * (16 for 4-bit) / 2**score_shift)``) into the score buffer
   (one entry per query and kept key) and updates the row maxima.
2. **Pass B** (softmax and PV): per kept block and group of ``C*ppc`` queries, a prescan of ``B`` cycles
   reads the block's scores to find each query's segment maximum, from which the leading-zero shift ``z``
   follows; then ``head_dim / R`` PV tiles of depth ``B`` (INT8 or UINT4 mode) take ``P`` straight from the
   exponent units and quantizers, fed from the score buffer; row sums accumulate on the first of them. Each
   drained column (one query, R head dims) is scaled by the block's V multiplier, shifted by ``z`` and added
   into the output accumulator buffer.
3. **Output**: per query, ``r = floor(2**recip_bits / l)`` and the codes
   ``clip(round(round(A / 2**pre) * r / 2**final_shift))`` go to memory at ``O_ADDR``.

Why store S rather than recompute it: recomputing costs a second QK^T pass, 50% more array cycles (pass A
and pass B have equal MACs), which caps utilization at 2/3; storing costs a buffer of
``block_size x max_kept_keys`` scores of 48 bits (``config.max_kept_keys``, checked against every plan).
Online (single-pass) softmax would need rescaling of the running output, which changes the integers the
golden model defines.

Cycle behaviour: the array is fed one beat per cycle through a one-stage read pipeline; it waits for the
prescans (``B`` cycles per ``head_dim/R`` tiles), the pass switches (pipeline drain, ``~R + C + 2C``
cycles), the fetches (the first query block's Q rows, and a kept key block's K rows on a cache miss in pass A
or its V rows on a miss in pass B: ``B * head_dim * 8 / axi_data_bits`` beats each, plus memory latency; the
next Q block and a fetched block's V are prefetched) and the output stage
(``B * head_dim / R`` beats per query block, written back before the next query block starts).
Overlapped: the prefetches with compute; not yet: cache-miss fetches and the output stage. ``paro simulate``
measures it.
"""

from amaranth import Module, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_WIDTH
from paro.sw.contract import OUTPUT_CODE_BYTES, engine_buffers

from .accumulator import OutputAccumulator
from .array import SystolicArray
from .axi4 import axi4_signature, connect_members
from .axi_lite import AxiLiteSignature, AxiLiteSlave
from .component import EngineBlock
from .controller import EngineController
from .fetcher import Fetcher
from .mem_reader import MemoryReader
from .mem_writer import MemoryWriter
from .operand_feed import OperandFeed, row_layout
from .output_stage import OutputStage
from .registers import RegisterFile
from .scheduler import BlockScheduler
from .score_unit import ScoreUnit
from .tile_queue import TileQueue

__all__ = ["AttentionEngine"]


class AttentionEngine(EngineBlock):
    def __init__(self, config):
        super().__init__(config, {
            "m_axi": Out(axi4_signature(config.axi_data_bits)), "axil": In(AxiLiteSignature),
            "busy": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, lanes = cfg.rows, 2 * cfg.cols
        m.submodules.control = control = AxiLiteSlave()
        m.submodules.registers = regs = RegisterFile(cfg)
        m.submodules.controller = ctrl = EngineController(cfg)
        m.submodules.scheduler = sched = BlockScheduler(cfg)
        m.submodules.feed = feed = OperandFeed(cfg)
        m.submodules.array = array = SystolicArray(cfg)
        m.submodules.tiles = tiles = TileQueue(cfg)
        m.submodules.score_unit = score = ScoreUnit(cfg)
        m.submodules.accumulator = acc = OutputAccumulator(cfg)
        m.submodules.output_stage = out = OutputStage(cfg)
        m.submodules.fetcher = fetch = Fetcher(cfg)
        m.submodules.reader = reader = MemoryReader(cfg)
        m.submodules.writer = writer = MemoryWriter(cfg)

        # Buffers (sizes from the contract): K and V (the cache's slots), Q (two query blocks), scores
        # (B x max_kept_keys).
        size = {name: buffer["entries"] for name, buffer in engine_buffers(cfg).items()}
        m.submodules.k_buffer = kmem = Memory(shape=row_layout(cfg), depth=size["k_buffer"], init=[])
        m.submodules.v_buffer = vmem = Memory(shape=row_layout(cfg), depth=size["v_buffer"], init=[])
        m.submodules.q_buffer = qmem = Memory(shape=row_layout(cfg), depth=size["q_buffer"], init=[])
        m.submodules.score_buffer = smem = Memory(shape=signed(SCORE_WIDTH), depth=size["score_buffer"], init=[])
        k_wr, v_wr, q_wr = kmem.write_port(), vmem.write_port(), qmem.write_port()
        s_wr = [smem.write_port() for _ in range(R)]
        k_rd = [kmem.read_port() for _ in range(lanes)]
        v_rd = vmem.read_port()
        q_rd = [qmem.read_port() for _ in range(R)]
        s_rd = [smem.read_port() for _ in range(lanes)]

        wiring.connect(m, wiring.flipped(self.axil), control.axil)
        wiring.connect(m, control.csr, regs.bus)
        wiring.connect(m, sched.o, ctrl.kept)
        wiring.connect(m, feed.a, array.a)
        wiring.connect(m, feed.b, array.b)
        wiring.connect(m, array.c, tiles.c)
        wiring.connect(m, out.o, writer.o)
        wiring.connect(m, ctrl.want, fetch.want)
        m.d.comb += ctrl.slot.eq(fetch.slot)
        wiring.connect(m, fetch.req, reader.req)
        wiring.connect(m, reader.row, fetch.row)
        connect_members(m, self.m_axi, reader.axi)
        connect_members(m, self.m_axi, writer.axi)
        m.d.comb += [
            self.busy.eq(ctrl.busy), self.done.eq(ctrl.done),
            # register file <-> controller, scheduler
            ctrl.start.eq(regs.start), ctrl.n_tokens.eq(regs.n_tokens),
            ctrl.row_first.eq(regs.row_first), ctrl.row_end.eq(regs.row_first + regs.row_count),
            regs.busy.eq(ctrl.busy), regs.done.eq(ctrl.done), regs.clear.eq(ctrl.clear), regs.beat.eq(feed.beat),
            regs.kept8.eq(sched.kept8), regs.kept4.eq(sched.kept4), regs.skipped.eq(sched.skipped),
            sched.wr_en.eq(regs.bitmap_we), sched.wr_addr.eq(regs.bitmap_addr), sched.wr_data.eq(regs.bitmap_data),
            sched.n_blocks.eq(regs.n_blocks), sched.clear.eq(ctrl.clear), sched.start.eq(ctrl.sched_start),
            sched.row.eq(ctrl.sched_row), sched.count.eq(ctrl.sched_count),
            # memory: fetches into the buffers, output codes out, byte counters
            fetch.start.eq(ctrl.clear), fetch.row_end.eq(regs.row_first + regs.row_count),
            fetch.q_addr.eq(regs.q_addr), fetch.k_addr.eq(regs.k_addr),
            fetch.v_addr.eq(regs.v_addr),
            k_wr.en.eq(fetch.k_we), k_wr.addr.eq(fetch.wr_addr), k_wr.data.eq(fetch.wr_data),
            v_wr.en.eq(fetch.v_we), v_wr.addr.eq(fetch.wr_addr), v_wr.data.eq(fetch.wr_data),
            q_wr.en.eq(fetch.q_we), q_wr.addr.eq(fetch.wr_addr), q_wr.data.eq(fetch.wr_data),
            writer.start.eq(ctrl.out_start),
            writer.addr.eq(regs.o_addr + ctrl.sched_row * (cfg.block_size * cfg.head_dim * OUTPUT_CODE_BYTES)),
            regs.read_beat.eq(reader.beat), regs.write_beat.eq(writer.beat),
            # issue side
            feed.cmd.eq(ctrl.cmd), feed.fire.eq(ctrl.fire), ctrl.advance.eq(feed.advance),
            ctrl.feed_busy.eq(feed.busy), feed.row_max.eq(score.row_max), feed.z.eq(ctrl.z),
            feed.reset_sums.eq(ctrl.reset_rows), ctrl.row_max.eq(score.row_max),
            v_rd.addr.eq(ctrl.v_addr), v_rd.en.eq(feed.advance), feed.v_row.eq(v_rd.data),
            ctrl.tile_room.eq(tiles.room), ctrl.tiles_empty.eq(tiles.empty),
            tiles.push.eq(ctrl.tile), tiles.push_en.eq(ctrl.tile_push),
            # drain side
            score.valid.eq(tiles.qk_valid), score.column.eq(tiles.column),
            score.tile.eq(tiles.tile), score.beat.eq(tiles.beat), score.cq.eq(ctrl.cq),
            score.score_shift.eq(regs.score_shift), score.n_tokens.eq(regs.n_tokens), score.reset.eq(ctrl.reset_rows),
            acc.valid.eq(tiles.pv_valid), acc.column.eq(tiles.column), acc.tile.eq(tiles.tile),
            acc.beat.eq(tiles.beat), ctrl.acc_pending.eq(acc.pending),
            # output
            out.start.eq(ctrl.out_start), out.last_block.eq(ctrl.out_last_block),
            ctrl.out_idle.eq(out.idle & writer.idle),
            out.final_shift.eq(regs.final_shift), out.row_sum.eq(feed.row_sum),
            acc.rd_addr.eq(out.rd_addr), acc.rd_en.eq(out.rd_en), out.rd_data.eq(acc.rd_data),
        ]
        for t in ("cq", "ck", "cv8", "cv4"):
            m.d.comb += [getattr(regs, f"{t}_addr").eq(getattr(ctrl, f"{t}_addr")),
                         getattr(ctrl, f"{t}_data").eq(getattr(regs, f"{t}_data"))]
        for r in range(R):
            m.d.comb += [q_rd[r].addr.eq(ctrl.q_addr[r]), q_rd[r].en.eq(feed.advance), feed.q_rows[r].eq(q_rd[r].data),
                         s_wr[r].addr.eq(score.wr_addr[r]), s_wr[r].data.eq(score.wr_data[r]),
                         s_wr[r].en.eq(score.wr_en)]
        for n in range(lanes):
            m.d.comb += [k_rd[n].addr.eq(ctrl.k_addr[n]), k_rd[n].en.eq(feed.advance), feed.k_rows[n].eq(k_rd[n].data),
                         s_rd[n].addr.eq(ctrl.s_addr[n]), s_rd[n].en.eq(feed.advance),
                         feed.scores[n].eq(s_rd[n].data), ctrl.scores[n].eq(s_rd[n].data)]
        return m
