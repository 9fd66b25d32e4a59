"""Attention engine: one head of block-sparse, mixed-precision attention driven by a BlockPlan.

Golden twin: :func:`paro.sw.golden.attention_head` (every integer, per query block
:func:`paro.sw.golden.attention_block_row`). This file only wires the blocks; each block's file states
its own cycle behaviour and has its own golden twin and unit test:

====================================== ==================================================================
block                                  does
====================================== ==================================================================
:class:`~.registers.RegisterFile`      register bus, control registers, per-block tables, counters
:class:`~.controller.EngineController` the FSM: loads, walks kept blocks, issues tiles, prescans
:class:`~.scheduler.BlockScheduler`    bitmap memory; emits a query row's kept key blocks
:class:`~.operand_feed.OperandFeed`    issue stage: array operands (with K reduction and P lanes), row sums
:class:`~.array.SystolicArray`         the PE array: one tile ``C = A B^T`` at a time
:class:`~.tile_queue.TileQueue`        descriptors of tiles in flight, matched to drained beats
:class:`~.score_unit.ScoreUnit`        pass A: scaled scores into the score buffer, row maxima
:class:`~.accumulator.OutputAccumulator` pass B: scaled PV columns into the output accumulators
:class:`~.output_stage.OutputStage`    reciprocals and output codes on the ``o`` stream
====================================== ==================================================================

Interfaces
----------
* ``kv`` (stream in): one token per beat, ``k`` and ``v`` rows of ``head_dim`` signed bytes (smoothed K).
  The first ``n_blocks * block_size`` beats after ``start`` fill the K and V buffers.
* ``q`` (stream in): one query token per beat; ``block_size`` beats at the start of every query block.
* ``o`` (stream out): output codes, one beat per (query, group of ``rows`` head dimensions), query-major;
  ``last`` on the head's final beat.
* Control: the register bus ``csr`` (:data:`~.registers.CSRBus`; map in :mod:`paro.sw.contract`). Write
  the scalar registers, the per-block multiplier tables and the bitmap, then write 1 to ``START``; ``done``
  rises when the last output beat has left. Status and counters are readable.

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
   ``clip(round(round(A / 2**pre) * r / 2**final_shift))`` stream out.

Why store S rather than recompute it: recomputing costs a second QK^T pass, 50% more array cycles (pass A
and pass B have equal MACs), which caps utilization at 2/3; storing costs a buffer of
``block_size x kept keys`` scores (``block_size x max_seq_len x 48`` bits at most). Online (single-pass)
softmax would need rescaling of the running output, which changes the integers the golden model defines.

Cycle behaviour: the array is fed one beat per cycle through a one-stage read pipeline; it waits for the
prescans (``B`` cycles per ``head_dim/R`` tiles), the pass switches (pipeline drain, ``~R + C + 2C``
cycles), the buffer fills (``B`` query beats per query block, ``n_blocks * B`` K/V beats per head) and the
output stage (``B * head_dim / R`` beats per query block). ``paro simulate`` measures all of it.
"""

from amaranth import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_WIDTH
from paro.sw.contract import check_engine_config

from .accumulator import OutputAccumulator
from .array import SystolicArray
from .component import ConfiguredComponent
from .controller import EngineController
from .operand_feed import OperandFeed, row_layout
from .output_stage import OutputStage, o_layout
from .registers import CSRBus, RegisterFile
from .scheduler import BlockScheduler
from .score_unit import ScoreUnit
from .tile_queue import TileQueue

__all__ = ["AttentionEngine", "kv_layout", "q_layout", "o_layout"]


def kv_layout(config):
    """One K/V token: ``k`` (smoothed) and ``v``, ``head_dim`` signed bytes each."""
    return data.StructLayout({"k": row_layout(config), "v": row_layout(config)})


def q_layout(config):
    """One query token: ``head_dim`` signed bytes."""
    return data.StructLayout({"q": row_layout(config)})


class AttentionEngine(ConfiguredComponent):
    @classmethod
    def check(cls, config):
        check_engine_config(config)

    def __init__(self, config):
        super().__init__(config, {
            "kv": In(stream.Signature(kv_layout(config))), "q": In(stream.Signature(q_layout(config))),
            "o": Out(stream.Signature(o_layout(config))), "csr": In(CSRBus), "busy": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B, R, lanes, tokens = cfg.block_size, cfg.rows, 2 * cfg.cols, cfg.max_seq_len
        m.submodules.registers = regs = RegisterFile(cfg)
        m.submodules.controller = ctrl = EngineController(cfg)
        m.submodules.scheduler = sched = BlockScheduler(cfg)
        m.submodules.feed = feed = OperandFeed(cfg)
        m.submodules.array = array = SystolicArray(cfg)
        m.submodules.tiles = tiles = TileQueue(cfg)
        m.submodules.score_unit = score = ScoreUnit(cfg)
        m.submodules.accumulator = acc = OutputAccumulator(cfg)
        m.submodules.output_stage = out = OutputStage(cfg)

        # Buffers: K and V (every token of the head), Q (one query block), scores (B x max_seq_len).
        m.submodules.k_buffer = kmem = Memory(shape=row_layout(cfg), depth=tokens, init=[])
        m.submodules.v_buffer = vmem = Memory(shape=row_layout(cfg), depth=tokens, init=[])
        m.submodules.q_buffer = qmem = Memory(shape=row_layout(cfg), depth=B, init=[])
        m.submodules.score_buffer = smem = Memory(shape=signed(SCORE_WIDTH), depth=B * tokens, init=[])
        k_wr, v_wr, q_wr = kmem.write_port(), vmem.write_port(), qmem.write_port()
        s_wr = [smem.write_port() for _ in range(R)]
        k_rd = [kmem.read_port() for _ in range(lanes)]
        v_rd = vmem.read_port()
        q_rd = [qmem.read_port() for _ in range(R)]
        s_rd = [smem.read_port() for _ in range(lanes)]

        wiring.connect(m, wiring.flipped(self.csr), regs.bus)
        wiring.connect(m, sched.o, ctrl.kept)
        wiring.connect(m, feed.a, array.a)
        wiring.connect(m, feed.b, array.b)
        wiring.connect(m, array.c, tiles.c)
        wiring.connect(m, out.o, wiring.flipped(self.o))
        m.d.comb += [
            self.busy.eq(ctrl.busy), self.done.eq(ctrl.done),
            # register file <-> controller, scheduler
            ctrl.start.eq(regs.start), ctrl.n_blocks.eq(regs.n_blocks), ctrl.n_tokens.eq(regs.n_tokens),
            regs.busy.eq(ctrl.busy), regs.done.eq(ctrl.done), regs.clear.eq(ctrl.clear), regs.beat.eq(feed.beat),
            regs.kept8.eq(sched.kept8), regs.kept4.eq(sched.kept4), regs.skipped.eq(sched.skipped),
            sched.wr_en.eq(regs.bitmap_we), sched.wr_addr.eq(regs.bitmap_addr), sched.wr_data.eq(regs.bitmap_data),
            sched.n_blocks.eq(regs.n_blocks), sched.clear.eq(ctrl.clear), sched.start.eq(ctrl.sched_start),
            sched.row.eq(ctrl.sched_row), sched.count.eq(ctrl.sched_count),
            # loads
            ctrl.kv_valid.eq(self.kv.valid), self.kv.ready.eq(ctrl.kv_ready),
            ctrl.q_valid.eq(self.q.valid), self.q.ready.eq(ctrl.q_ready),
            k_wr.en.eq(ctrl.kv_write), k_wr.addr.eq(ctrl.load_addr), k_wr.data.eq(self.kv.payload.k),
            v_wr.en.eq(ctrl.kv_write), v_wr.addr.eq(ctrl.load_addr), v_wr.data.eq(self.kv.payload.v),
            q_wr.en.eq(ctrl.q_write), q_wr.addr.eq(ctrl.load_addr), q_wr.data.eq(self.q.payload.q),
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
            out.start.eq(ctrl.out_start), out.last_block.eq(ctrl.out_last_block), ctrl.out_idle.eq(out.idle),
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
