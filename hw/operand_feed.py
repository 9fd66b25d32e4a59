"""Operand feed: turns the controller's issue commands and the buffers' read data into the array's input
beats, two stages deep, and keeps the softmax row sums.

Golden twin: :func:`paro.sw.golden.operand_feed` (the ``A`` and ``B`` operands of one tile: ``Q`` rows and
``K`` (reduced to 4 or 2 bits in 4- and 2-bit blocks) for QK^T; ``V^T`` rows and quantized ``P`` for PV). A
beat's PE mode follows its pass and its block's ``packing``: INT8, INT4/UINT4 or INT2/UINT2.

Cycle behaviour, two stages that move together (``advance``): in the cycle the controller ``fire``s a command
it also addresses the buffers (synchronous read ports, enabled by ``advance``); at the next edge the command
enters stage 1 (``stage``), and the read data arrives with it (Q and K as one word of each lane's row: the
stage's step picks the byte; in a PV beat the P lanes' exponent units take the stored scores). At the edge after
that the beat moves to stage 2 (``out``) with its bytes of Q, K and V and its numerators ``e`` registered, and
is offered on ``a``/``b`` (always together), its K reduced and its P quantized there. ``advance`` is high
when stage 2 is empty or the array takes its beat, so the controller may fire every cycle the array accepts;
a beat reaches the array two cycles after its fire. The register between the stages splits the path from the
score buffer through the exponent, the quantizer and the PE operand logic. ``beat`` marks a cycle in which the
array took a beat; ``busy`` is high while either stage holds one. On the first head-dimension group of a block
a PV beat's ``e`` is added to the row sums of the lanes' queries as the array takes it. ``reset_sums`` zeroes
the row sums.

LUT-path beats (a ``lut_path`` build, command ``lut``): a PV beat of a LUT-path block goes to the stream
``lut`` (:class:`~.lut_path.LutPath`) instead of the array: the first ``C`` lanes' numerators and segment
shifts, the key's whole V row (registered in stage 2, ``out_v``), the query group, and whether it is the
group's first or last key; ``advance`` then follows ``lut.ready``, and its numerators go to the row sums as
``lut`` takes it (every LUT beat: the block has one pass over its keys per query group).
"""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Assert, Assume
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.config import PACKING, SCORE_WIDTH, PEMode
from paro.sw.contract import engine_row_buffer
from paro.sw.golden import P_SHIFT_MAX

from .array import a_layout, b_layout
from .component import ConfiguredComponent
from .formal import held
from .k_reduce import KReduction
from .lut_path import lut_beat_layout
from .p_lanes import PLanes, lane_query_value
from .word_mux import word_mux

__all__ = ["OperandFeed", "issue_layout", "row_layout", "word_layout", "formal_properties"]


def _byte(word, step):
    """Byte ``step % bytes`` of a buffer word of ``bytes`` bytes (the word holds the step's byte of its row)."""
    size = word.shape().length
    return word_mux(word.as_value(), step[:(size - 1).bit_length()] if size > 1 else 0, 8).as_signed()


def row_layout(config):
    """One token row of Q, K or V: ``head_dim`` signed bytes."""
    return data.ArrayLayout(signed(8), config.head_dim)


def word_layout(geometry):
    """The word each reader of a banked row buffer of ``geometry`` returns
    (:func:`~paro.sw.contract.row_buffer_geometry`): ``word_bytes`` signed bytes."""
    return data.ArrayLayout(signed(8), geometry["word_bytes"])


def issue_layout(config):
    """One issued beat: pass (QK^T or PV), step k within the tile, groups, mode, tile end, key validity, and
    (PV) the P lanes' row maxima and segment shifts ``z`` (the controller selects both per lane)."""
    return data.StructLayout({"pass_b": 1, "step": range(max(config.block_size, config.head_dim)),
                              "dim_group": range(config.head_dim), "query_group": range(config.block_size),
                              "packing": 2, "last": 1, "key_valid": 1, "first_dim_group": 1, "lut": 1,
                              "row_max": data.ArrayLayout(signed(SCORE_WIDTH), config.engine_lanes),
                              "z": data.ArrayLayout(range(P_SHIFT_MAX + 1), config.engine_lanes)})


class OperandFeed(ConfiguredComponent):
    def __init__(self, config):
        R, B, lanes = config.rows, config.block_size, config.engine_lanes
        super().__init__(config, {
            "cmd": In(issue_layout(config)), "fire": In(1), "advance": Out(1), "busy": Out(1), "beat": Out(1),
            "q_words": In(data.ArrayLayout(word_layout(engine_row_buffer(config, "q_buffer")), R)),
            "k_words": In(data.ArrayLayout(word_layout(engine_row_buffer(config, "k_buffer")), lanes)),
            "v_row": In(row_layout(config)),
            "scores": In(data.ArrayLayout(signed(SCORE_WIDTH), lanes)),
            "reset_sums": In(1), "row_sum": Out(data.ArrayLayout(unsigned(config.row_sum_width), B)),
            "a": Out(stream.Signature(a_layout(config))), "b": Out(stream.Signature(b_layout(config))),
            **({"lut": Out(stream.Signature(lut_beat_layout(config)))} if config.lut_path else {}),
        })
        fields = {name: field.shape for name, field in issue_layout(config)}
        self.stage = Signal(data.StructLayout({"valid": 1, **fields}))      # stage 1: the fired beat, read data
        self.out = Signal(data.StructLayout({"valid": 1, **fields}))        # stage 2: the beat offered on a and b
        self.out_bytes = Signal(data.StructLayout({                          # stage 2: the beat's Q, K, V bytes
            "q": data.ArrayLayout(signed(8), R), "k": data.ArrayLayout(signed(8), lanes),
            "v": data.ArrayLayout(signed(8), R)}))
        self.out_e = Signal(data.ArrayLayout(unsigned(config.exp_bits + 1), lanes))  # stage 2: its numerators
        if config.lut_path:
            self.out_v = Signal(row_layout(config))                          # stage 2: the whole V row (LUT)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, B, d, lanes = cfg.rows, cfg.cols, cfg.block_size, cfg.head_dim, cfg.engine_lanes
        computed = cfg.computed_bitwidths
        fields = {name: field.shape for name, field in issue_layout(cfg)}
        stage, out, held = self.stage, self.out, self.out_bytes
        taken = Signal()            # stage 2's beat leaves (to the array, or to the LUT path)
        if cfg.lut_path:
            lut = self.lut.payload
            m.d.comb += [taken.eq(out.valid & Mux(out.lut, self.lut.ready, self.a.ready)),
                         self.lut.valid.eq(out.valid & out.lut), lut.v.eq(self.out_v),
                         lut.query_group.eq(out.query_group), lut.first.eq(out.step == 0), lut.last.eq(out.last),
                         *(lut.e[n].eq(self.out_e[n]) for n in range(C)), *(lut.z[n].eq(out.z[n]) for n in range(C))]
            with m.If(self.advance):
                m.d.sync += self.out_v.eq(self.v_row)
        else:
            m.d.comb += taken.eq(out.valid & self.a.ready)
        m.d.comb += [self.advance.eq(~out.valid | taken), self.busy.eq(stage.valid | out.valid),
                     self.beat.eq(taken & ~out.lut)]
        with m.If(self.advance):
            m.d.sync += [stage.valid.eq(self.fire), out.eq(stage)]
        with m.If(self.fire):
            m.d.sync += [stage[name].eq(self.cmd[name]) for name in fields]

        m.submodules.p_lanes = p_lanes = PLanes(cfg)
        m.submodules.k_reduce = k_reduce = KReduction(cfg)
        m.d.comb += [p_lanes.x.eq(self.scores), p_lanes.key_valid.eq(stage.key_valid), p_lanes.en.eq(self.advance),
                     p_lanes.z.eq(out.z), p_lanes.packing.eq(out.packing), self.out_e.eq(p_lanes.e)]
        # Stage 1: the byte of the beat's step in each reader's word (the K and Q buffers return a word of the
        # row) and the beat's R dims of V, registered for stage 2.
        v_group = word_mux(self.v_row.as_value(), stage.dim_group if d > R else 0, 8 * R)
        with m.If(self.advance):
            m.d.sync += [*(held.k[n].eq(_byte(self.k_words[n], stage.step)) for n in range(lanes)),
                         *(held.q[r].eq(_byte(self.q_words[r], stage.step)) for r in range(R)),
                         held.v.eq(v_group)]
        for n in range(lanes):
            m.d.comb += [p_lanes.row_max[n].eq(stage.row_max[n]), k_reduce.k8[n].eq(held.k[n])]

        a, b = self.a.payload, self.b.payload
        m.d.comb += [self.a.valid.eq(out.valid & ~out.lut), self.b.valid.eq(out.valid & ~out.lut), a.last.eq(out.last),
                     a.mode.eq(PEMode.INT8)]
        for bits in computed:
            with m.If(out.packing == PACKING[bits]):
                m.d.comb += a.mode.eq(Mux(out.pass_b, PEMode.for_block(bits, "pv"), PEMode.for_block(bits, "qk")))
        for r in range(R):
            m.d.comb += a.a[r].eq(Mux(out.pass_b, held.v[r], held.q[r]))
        # PE column c's operand word: the lanes c << packing .. of K (reduced) or P, one value per field
        k_lanes = {8: [held.k[n] for n in range(C)], 4: k_reduce.k4,
                   2: getattr(k_reduce, "k2", None)}
        word_fields = {8: ("int8", "int8"), 4: ("int4", "uint4"), 2: ("int2", "uint2")}
        # the exponents of a QK^T beat's K cut at the leading zero (each column's nibbles or crumbs), else 0
        for bits, name in ((4, "e4"), (2, "e2")):
            if cfg.leading_zero(bits):
                per = 1 << PACKING[bits]
                with m.If(~out.pass_b & (out.packing == PACKING[bits])):
                    m.d.comb += [b.exp[c][k].eq(getattr(k_reduce, name)[per * c + k])
                                 for c in range(C) for k in range(per)]
        for c in range(C):
            word = b.b[c]
            for bits in computed:
                per = 1 << PACKING[bits]
                qk, pv = (getattr(word, name) for name in word_fields[bits])
                with m.If(out.packing == PACKING[bits]):
                    with m.If(out.pass_b):
                        m.d.comb += [(pv[k] if per > 1 else pv).eq(p_lanes.p[per * c + k]) for k in range(per)]
                    with m.Else():
                        m.d.comb += [(qk[k] if per > 1 else qk).eq(k_lanes[bits][per * c + k]) for k in range(per)]

        sums = [Signal(cfg.row_sum_width, name=f"row_sum{q}") for q in range(B)]
        m.d.comb += [self.row_sum[q].eq(sums[q]) for q in range(B)]
        # one adder per lane: the lane's query's sum plus its numerator, written back to that query
        added = [Signal(cfg.row_sum_width, name=f"sum_plus_e{n}") for n in range(lanes)]
        m.d.comb += [added[n].eq(lane_query_value(cfg, sums, n, out.packing, out.query_group) + self.out_e[n])
                     for n in range(lanes)]
        with m.If(taken & out.pass_b & out.first_dim_group), m.Switch(out.packing):
            for bits in computed:
                width = C << PACKING[bits]              # queries per PV tile
                with m.Case(PACKING[bits]), m.Switch(out.query_group):
                    for group in range(B // width):
                        with m.Case(group):
                            m.d.sync += [sums[q].eq(added[q % width])
                                         for q in range(group * width, (group + 1) * width)]
        with m.If(self.reset_sums):
            m.d.sync += [s.eq(0) for s in sums]
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``a`` and ``b`` are offered together, and while they wait the
    stage-2 registers they are computed from hold (``a``'s and ``b``'s payloads are combinational in ``out``,
    ``out_bytes`` and the registered numerators ``out_e``, all loaded only while ``advance`` is high).
    Assumed: the array takes ``a`` and ``b`` together (proved there); the controller fires only while
    ``advance`` is high."""
    m.d.comb += [Assert(dut.a.valid == dut.b.valid, "a and b together"), Assume(~dut.fire | dut.advance),
                 Assume(dut.a.ready == dut.b.ready)]
    held(m, dut.a.valid, dut.a.ready, Cat(dut.out.as_value(), dut.out_bytes.as_value(), dut.out_e.as_value()), "a")
