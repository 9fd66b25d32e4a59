"""Engine controller: the FSM that runs one head per ``start`` (from the :class:`~.sequencer.LayerSequencer`),
walking every query block's kept key blocks twice (QK^T, then softmax and PV), then the output stage.

Golden twin: :func:`paro.sw.golden.engine_controller` (the tiles it issues, in order, with their
descriptors). States, per head: ``IDLE`` -(start)-> per query block ``i`` from ``row_first`` to ``row_end - 1``:

* ``LOAD_Q``: wants query block ``i`` (Q rows, bitmap row) from the :class:`~.fetcher.Fetcher`; then resets the
  row maxima, latches ``cq_i`` and starts the scheduler's walk of row ``i``; with speculation the walk waits
  (``SPEC``, ``spec_wait``) until the :class:`~.spec_control.SpecControl` passes the row (``spec_row_ready``).
* ``A_NEXT`` / ``A_TILES``: per kept block (taken once its K rows are on chip), ``(B/R) x (B/(C*ppc))`` QK^T
  tiles of ``head_dim`` beats, one a cycle while the feed advances; a tile's first beat pushes its descriptor
  (room in the tile queue). ``A_WAIT``: until the feed, the tile queue and the score unit are empty.
* ``B_NEXT`` / ``B_SHIFT`` / ``B_TILES``: per kept block (once its V rows are on chip), per query group ``d/R``
  PV tiles of ``B`` beats, back to back across the groups, each beat with the lanes' segment shifts ``z`` and
  row maxima (from the :class:`~.segment_shift.SegmentShift`, run one group ahead, on the segment maxima
  read at ``kept_index``; ``B_SHIFT`` waits ``SHIFT_STAGES`` cycles for the first group's). ``B_WAIT``: until
  the feed, the tile queue and the accumulator are empty.
* LUT-path blocks (``lut_path`` builds; ``bits`` = ``LUT_BLOCK``) run pass A at 4 bits. In pass B ``B_NEXT``
  takes one only while the array's side is idle (feed, tile queue, accumulator), ``B_TILES`` issues one
  ``lut`` beat per query group of ``C`` and key (no tiles) at the :class:`~.lut_path.LutPath`'s rate, and
  ``B_LUT`` waits for the LUT path, holding ``kept_index`` and ``cv`` (``lut_kept_index``, ``lut_cv``).
* Output: ``B_WAIT`` starts the output stage (``out_start``), beside the next block's ``LOAD_Q`` and pass A;
  ``A_WAIT`` waits for it (``out_idle``) before pass B overwrites the row sums and accumulators. After the
  last block ``OUT`` waits for the write-back, then ``IDLE`` with ``done``.

``hint`` names the scheduler's next kept block for the fetcher. Every buffer read address comes from here
(synchronous reads enabled by the feed's ``advance``; K and V rows from the block's cache ``slot``).
"""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.config import PACKING, SCORE_WIDTH
from paro.sw.contract import engine_row_buffer
from paro.sw.cycles import SHIFT_STAGES
from paro.sw.golden import CV2_FROM_CV4, LUT_BLOCK, LUT_QK_BITS, k_reduce_shift

from .component import ConfiguredComponent
from .formal import past, stream_held
from .kv_cache import WANT_K, WANT_Q, WANT_V, want_layout
from .operand_feed import issue_layout
from .scheduler import kept_layout
from .segment_shift import SegmentShift
from .tile_queue import ck_width, cv_width, tile_layout

__all__ = ["EngineController", "formal_properties"]


def _word_shift(config, name):
    """log2 of the bytes in a word of the engine's banked row buffer ``name``: the step's word is
    ``step >> shift``."""
    return engine_row_buffer(config, name)["word_bytes"].bit_length() - 1


class EngineController(ConfiguredComponent):
    def __init__(self, config):
        B, nb, tokens = config.block_size, config.max_blocks, config.max_seq_len
        super().__init__(config, {
            "start": In(1), "busy": Out(1), "done": Out(1),
            "n_tokens": In(range(tokens + 1)), "row_first": In(range(nb)), "row_end": In(range(nb + 1)),
            "kept": In(stream.Signature(kept_layout(nb))),
            "sched_start": Out(1), "sched_row": Out(range(nb)), "sched_count": Out(1),
            **{f"{t}_addr": Out(range(nb)) for t in ("cq", "ck", "cv8", "cv4")},
            **{f"{t}_data": In(16) for t in ("cq", "ck", "cv8", "cv4")}, "cq": Out(16),
            "want": Out(stream.Signature(want_layout(config))), "slot": In(range(config.kv_cache_blocks)),
            "hint": Out(want_layout(config)), "hint_valid": Out(1),
            "q_row": Out(range(2 * B)), "q_word": Out(range(engine_row_buffer(config, "q_buffer")["words_per_row"])),
            "k_row": Out(range(config.kv_cache_blocks * B)),
            "k_word": Out(range(engine_row_buffer(config, "k_buffer")["words_per_row"])),
            "v_addr": Out(range(config.kv_cache_blocks * B)),
            "s_query": Out(range(B)), "s_key": Out(range(config.max_kept_keys)),
            "row_max": In(data.ArrayLayout(signed(SCORE_WIDTH), B)),
            "seg_addr": Out(range(config.max_kept_blocks)), "seg_data": In(data.ArrayLayout(signed(SCORE_WIDTH), B)),
            "cmd": Out(issue_layout(config)), "fire": Out(1), "advance": In(1), "feed_busy": In(1),
            "reset_max": Out(1), "reset_sums": Out(1), "acc_pending": In(1), "score_pending": In(1),
            "tile": Out(tile_layout(config)), "tile_push": Out(1), "tile_room": In(1), "tiles_empty": In(1),
            "out_start": Out(1), "out_idle": In(1),
            **({"spec_row_ready": In(range(nb + 1)), "spec_wait": Out(1)} if config.spec_lanes else {}),
            **({"lut_busy": In(1), "lut_cv": Out(cv_width(config)),
                "lut_kept_index": Out(range(config.max_kept_blocks + 1))} if config.lut_path else {}),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, B, d, lanes = cfg.rows, cfg.cols, cfg.block_size, cfg.head_dim, cfg.engine_lanes
        # named explicitly: begin_row's closure makes some of them cells, which the name tracer does not follow
        busy, pass_b = Signal(name="busy"), Signal(name="pass_b")
        query_block, key_block = Signal(range(cfg.max_blocks + 1), name="query_block"), Signal(range(cfg.max_blocks))
        kept_index = Signal(range(cfg.max_kept_blocks + 1), name="kept_index")
        key_slot = Signal(range(cfg.kv_cache_blocks))          # the block's slot in the K/V buffers
        packing, ck, cv = Signal(2), Signal(ck_width(cfg)), Signal(cv_width(cfg))
        step, shift_wait = Signal(range(max(B, d) + 1)), Signal(range(SHIFT_STAGES))
        query_group, key_group, dim_group = Signal(range(B)), Signal(range(B)), Signal(range(d))
        keys_per_tile, can_issue = Signal(range(lanes + 1)), Signal()   # can_issue: room for a tile's descriptor
        lut, idle = Signal(name="lut"), Signal()   # pass B's block takes the LUT path; the array's side is empty
        m.d.comb += [idle.eq(~self.feed_busy & self.tiles_empty & ~self.acc_pending),
                     *([self.lut_cv.eq(cv), self.lut_kept_index.eq(kept_index)] if cfg.lut_path else []),
                     self.busy.eq(busy), self.sched_row.eq(query_block), self.seg_addr.eq(kept_index),
                     keys_per_tile.eq(C << packing), can_issue.eq((step != 0) | self.tile_room),
                     # the scheduler's next kept block while this one computes: the fetcher may fetch it early
                     self.hint_valid.eq(busy & self.kept.valid & ~self.kept.payload.end & ~self.want.valid),
                     self.hint.kind.eq(Mux(pass_b, WANT_V, WANT_K)), self.hint.block.eq(self.kept.payload.j)]
        cmd, tile = self.cmd, self.tile
        m.submodules.segment_shift = shifts = SegmentShift(cfg)        # one query group ahead, latched
        m.d.comb += [shifts.row_max.eq(self.row_max), shifts.seg_max.eq(self.seg_data), shifts.packing.eq(packing)]
        def per_bits(selector, of_bits, key=lambda bits: bits):
            """``of_bits(b)`` for the computed bitwidth ``b`` with ``key(b) == selector`` (8 bits otherwise)."""
            out = of_bits(8)
            for bits in cfg.computed_bitwidths:
                if bits != 8:
                    out = Mux(selector == key(bits), of_bits(bits), out)
            return out

        def last_group(value):
            """The last key group (pass A) or query group (pass B) of a block with packing ``value``."""
            return per_bits(value, lambda bits: B // (C << PACKING[bits]) - 1, PACKING.get)

        def want_kept_block(kind, hold=Const(0)):
            """Want the offered kept block's K or V rows (not while ``hold``); take the block (or the row's end)
            from the scheduler once they are on chip. Returns the condition under which a block was taken."""
            block = self.kept.valid & ~self.kept.payload.end & ~hold
            m.d.comb += [self.want.valid.eq(block), self.want.payload.kind.eq(kind),
                         self.want.payload.block.eq(self.kept.payload.j),
                         self.kept.ready.eq(self.kept.payload.end | (block & self.want.ready))]
            return block & self.want.ready

        def begin_row():
            """Query block ``query_block``'s Q rows are on chip: reset the row maxima, latch ``cq``, walk it."""
            m.d.comb += [self.reset_max.eq(1), self.sched_start.eq(1), self.sched_count.eq(1)]
            m.d.sync += [kept_index.eq(0), self.cq.eq(self.cq_data), pass_b.eq(0)]
            m.next = "A_NEXT"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), self.done.eq(0), query_block.eq(self.row_first)]
                    m.next = "LOAD_Q"
            with m.State("LOAD_Q"):
                m.d.comb += [self.want.valid.eq(1), self.want.payload.kind.eq(WANT_Q),
                             self.want.payload.block.eq(query_block), self.cq_addr.eq(query_block)]
                with m.If(self.want.ready):
                    if cfg.spec_lanes:
                        with m.If(query_block < self.spec_row_ready):
                            begin_row()
                        with m.Else():
                            m.next = "SPEC"
                    else:
                        begin_row()
            if cfg.spec_lanes:
                with m.State("SPEC"):
                    m.d.comb += [self.cq_addr.eq(query_block), self.spec_wait.eq(1)]
                    with m.If(query_block < self.spec_row_ready):
                        begin_row()
            with m.State("A_NEXT"):
                fetched = want_kept_block(WANT_K)
                m.d.comb += self.ck_addr.eq(self.kept.payload.j)
                with m.If(self.kept.valid & self.kept.payload.end):
                    m.next = "A_WAIT"
                with m.Elif(fetched):
                    bits = Mux(self.kept.payload.bits == LUT_BLOCK, LUT_QK_BITS, self.kept.payload.bits)
                    m.d.sync += [key_block.eq(self.kept.payload.j), key_slot.eq(self.slot),
                                 packing.eq(per_bits(bits, PACKING.get)), step.eq(0), query_group.eq(0),
                                 key_group.eq(0),
                                 ck.eq(per_bits(bits, lambda b: self.ck_data << k_reduce_shift(b, cfg.k_cuts)))]
                    m.next = "A_TILES"
            with m.State("A_TILES"):
                m.d.comb += [self.fire.eq(self.advance & can_issue),
                             self.q_row.eq(query_block[0] * B + query_group * R),
                             self.q_word.eq(step >> _word_shift(cfg, "q_buffer")),
                             self.k_row.eq(key_slot * B + key_group * keys_per_tile),
                             self.k_word.eq(step >> _word_shift(cfg, "k_buffer"))]
                m.d.comb += [tile.query_group.eq(query_group), tile.key_group.eq(key_group),
                             tile.kept_index.eq(kept_index), tile.key_block.eq(key_block), tile.packing.eq(packing),
                             tile.ck.eq(ck), self.tile_push.eq(self.fire & (step == 0)),
                             cmd.step.eq(step), cmd.packing.eq(packing), cmd.query_group.eq(query_group),
                             cmd.last.eq(step == d - 1)]
                with m.If(self.fire):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == d - 1):
                        m.d.sync += [step.eq(0), query_group.eq(query_group + 1)]
                        with m.If(query_group == B // R - 1):
                            m.d.sync += [query_group.eq(0), key_group.eq(key_group + 1)]
                            with m.If(key_group == last_group(packing)):
                                m.d.sync += kept_index.eq(kept_index + 1)
                                m.next = "A_NEXT"
            with m.State("A_WAIT"):
                with m.If(~self.feed_busy & self.tiles_empty & ~self.score_pending & self.out_idle):
                    m.d.comb += [self.sched_start.eq(1), self.reset_sums.eq(1)]
                    m.d.sync += [kept_index.eq(0), pass_b.eq(1)]
                    m.next = "B_NEXT"
            with m.State("B_NEXT"):
                is_lut = (self.kept.payload.bits == LUT_BLOCK) if cfg.lut_path else 0
                fetched = want_kept_block(WANT_V, hold=is_lut & ~idle)
                m.d.comb += [self.cv8_addr.eq(self.kept.payload.j), self.cv4_addr.eq(self.kept.payload.j)]
                with m.If(self.kept.valid & self.kept.payload.end):
                    m.next = "B_WAIT"
                with m.Elif(fetched):
                    bits = self.kept.payload.bits
                    multiplier = {8: self.cv8_data, 4: self.cv4_data, 2: self.cv4_data * CV2_FROM_CV4}
                    m.d.sync += [key_block.eq(self.kept.payload.j), key_slot.eq(self.slot),
                                 packing.eq(per_bits(bits, PACKING.get)), query_group.eq(0), dim_group.eq(0),
                                 step.eq(0), cv.eq(per_bits(bits, multiplier.get)), lut.eq(is_lut),
                                 shift_wait.eq(0)]
                    m.d.comb += shifts.start.eq(1)
                    m.next = "B_SHIFT"
            with m.State("B_SHIFT"):                     # the first group's shifts through the segment shift
                m.d.sync += shift_wait.eq(shift_wait + 1)
                with m.If(shift_wait == SHIFT_STAGES - 1):
                    m.d.comb += shifts.latch.eq(1)
                    m.next = "B_TILES"
            with m.State("B_TILES"):
                m.d.comb += [self.fire.eq(self.advance & (can_issue | lut)), self.v_addr.eq(key_slot * B + step),
                             self.s_query.eq(query_group * keys_per_tile), self.s_key.eq(kept_index * B + step)]
                m.d.comb += [tile.pass_b.eq(1), tile.query_group.eq(query_group), tile.dim_group.eq(dim_group),
                             tile.kept_index.eq(kept_index), tile.key_block.eq(key_block), tile.packing.eq(packing),
                             tile.cv.eq(cv), tile.z.eq(shifts.z),
                             self.tile_push.eq(self.fire & (step == 0) & ~lut), cmd.lut.eq(lut),
                             cmd.pass_b.eq(1), cmd.step.eq(step), cmd.dim_group.eq(dim_group),
                             cmd.query_group.eq(query_group), cmd.packing.eq(packing), cmd.last.eq(step == B - 1),
                             cmd.key_valid.eq(key_block * B + step < self.n_tokens),
                             cmd.first_dim_group.eq(dim_group == 0), cmd.z.eq(shifts.z),
                             cmd.row_max.eq(shifts.lane_row_max)]
                with m.If(self.fire):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == B - 1):
                        m.d.sync += [step.eq(0), dim_group.eq(dim_group + 1)]
                        with m.If(lut | (dim_group == d // R - 1)):
                            m.d.sync += [dim_group.eq(0), query_group.eq(query_group + 1)]
                            m.d.comb += shifts.latch.eq(1)
                            with m.If(query_group == last_group(packing)):
                                m.d.sync += kept_index.eq(kept_index + ~lut)    # a LUT-path block's: in B_LUT
                                m.next = "B_NEXT"
                                with m.If(lut):
                                    m.next = "B_LUT"
            with m.State("B_LUT"):                       # (only in lut_path builds)
                with m.If(idle & ~(self.lut_busy if cfg.lut_path else Const(0))):
                    m.d.sync += kept_index.eq(kept_index + 1)
                    m.next = "B_NEXT"
            with m.State("B_WAIT"):
                with m.If(idle):
                    m.d.comb += self.out_start.eq(1)
                    with m.If(query_block == self.row_end - 1):
                        m.next = "OUT"
                    with m.Else():                       # the output stage runs beside the next pass A
                        m.d.sync += query_block.eq(query_block + 1)
                        m.next = "LOAD_Q"
            with m.State("OUT"):
                with m.If(self.out_idle):
                    m.d.sync += [busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``want`` keeps the stream rules (a ``start`` abandons a waiting
    want). Assumed: ``kept`` keeps them too (the scheduler's, proved there; a ``sched_start`` abandons)."""
    stream_held(m, dut.want, "want", unless=past(m, dut.start, "start"))
    stream_held(m, dut.kept, "kept", unless=past(m, dut.sched_start, "sched_start"), assume=True)
