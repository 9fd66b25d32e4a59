"""Attention engine: one head of block-sparse, mixed-precision attention driven by a BlockPlan.

Golden twin: :func:`sw.golden.attention_head` (every integer, per query block
:func:`sw.golden.attention_block_row`).

Interfaces
----------
* ``kv`` (stream in): one token per beat, ``k`` and ``v`` rows of ``head_dim`` signed bytes (smoothed K).
  The first ``n_blocks * block_size`` beats after ``start`` fill the K and V buffers.
* ``q`` (stream in): one query token per beat; ``block_size`` beats at the start of every query block.
* ``o`` (stream out): output codes, one beat per (query, group of ``rows`` head dimensions), query-major;
  ``last`` on the head's final beat.
* Control: a register bus (``csr_we``, ``csr_addr``, ``csr_wdata``, ``csr_rdata``) - see :data:`CSR`. Write
  the scalar registers, the per-block multiplier tables and the bitmap, then write 1 to ``START``; ``done``
  rises when the last output beat has left. Status and counters are readable.

Dataflow per query block i (two-pass softmax that stores S)
-----------------------------------------------------------
1. **Pass A** (QK^T): the :class:`~hw.scheduler.BlockScheduler` emits the kept key blocks of row i (0-bit
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

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.config import PEMode, require_config
from paro.errors import ParoError
from sw.golden import P_SHIFT_MAX

from .array import SystolicArray
from .quantizer import PQuantizer
from .scheduler import BlockScheduler
from .softmax import Exp2Unit, LeadingZeroShift

__all__ = ["AttentionEngine", "CSR", "SCORE_WIDTH", "engine_limits"]

#: Width of the stored scores x (log2 domain, score_frac_bits fractional bits).
SCORE_WIDTH = 48
#: Smallest score shift the scaling unit supports (keeps x within SCORE_WIDTH bits).
MIN_SCORE_SHIFT = 12

#: Register map: scalar registers and the base addresses of the tables (word addresses, 32-bit data).
CSR = {
    "START": 0x00, "N_TOKENS": 0x01, "N_BLOCKS": 0x02, "SCORE_SHIFT": 0x03, "FINAL_SHIFT": 0x04,
    "STATUS": 0x10, "CYCLES": 0x11, "ARRAY_BEATS": 0x12, "STALL_CYCLES": 0x13,
    "KEPT8": 0x14, "KEPT4": 0x15, "SKIPPED": 0x16,
    "CQ": 0x10_0000, "CK": 0x20_0000, "CV8": 0x30_0000, "CV4": 0x40_0000, "BITMAP": 0x80_0000,
}


def engine_limits(config):
    """Derived sizes: max blocks, padded tokens, output accumulator width."""
    max_blocks = config.max_seq_len // config.block_size
    acc_out = config.acc_width + 15 + max(1, (max_blocks - 1).bit_length()) + 1
    return {"max_blocks": max_blocks, "max_tokens": config.max_seq_len, "acc_out_width": acc_out}


class AttentionEngine(wiring.Component):
    def __init__(self, config):
        require_config(self, config)
        if 4 not in config.bitwidths:
            self._MustUse__silence = True
            raise ParoError("the attention engine needs bitwidths with 4 (and 8); got "
                            f"{list(config.bitwidths)}")
        if config.max_seq_len > 4096:
            self._MustUse__silence = True
            raise ParoError(f"the engine's score buffer is block_size x max_seq_len entries; max_seq_len "
                            f"{config.max_seq_len} is too large to build, use <= 4096")
        self._config = config
        d, R = config.head_dim, config.rows
        super().__init__({
            "kv": In(stream.Signature(data.StructLayout({"k": data.ArrayLayout(signed(8), d),
                                                         "v": data.ArrayLayout(signed(8), d)}))),
            "q": In(stream.Signature(data.StructLayout({"q": data.ArrayLayout(signed(8), d)}))),
            "o": Out(stream.Signature(data.StructLayout({"o": data.ArrayLayout(signed(config.out_bits), R),
                                                         "last": 1}))),
            "csr_we": In(1), "csr_addr": In(24), "csr_wdata": In(32), "csr_rdata": Out(32),
            "busy": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, B, d = cfg.rows, cfg.cols, cfg.block_size, cfg.head_dim
        lim = engine_limits(cfg)
        NB, NPAD, ACCO = lim["max_blocks"], lim["max_tokens"], lim["acc_out_width"]
        LANES = 2 * C
        XW = SCORE_WIDTH

        m.submodules.array = array = SystolicArray(cfg)
        m.submodules.sched = sched = BlockScheduler(cfg)

        # ---- control registers ---------------------------------------------------------------------
        n_tokens = Signal(range(NPAD + 1))
        n_blocks = Signal(range(NB + 1))
        score_shift = Signal(6)
        final_shift = Signal(7)
        cycles, beats = Signal(32), Signal(32)
        start = Signal()
        region = self.csr_addr[20:24]
        offset = self.csr_addr[:20]
        tables = {}
        for name, base in (("cq", CSR["CQ"]), ("ck", CSR["CK"]), ("cv8", CSR["CV8"]), ("cv4", CSR["CV4"])):
            mem = Memory(shape=16, depth=NB, init=[])
            m.submodules[f"{name}_table"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(offset), wp.data.eq(self.csr_wdata),
                         wp.en.eq(self.csr_we & (region == base >> 20))]
            tables[name] = mem.read_port(domain="comb")
        m.d.comb += [
            sched.wr_en.eq(self.csr_we & (region == CSR["BITMAP"] >> 20)),
            sched.wr_addr.eq(offset), sched.wr_data.eq(self.csr_wdata),
            sched.n_blocks.eq(n_blocks),
            start.eq(self.csr_we & (self.csr_addr == CSR["START"]) & self.csr_wdata[0]),
        ]
        with m.If(self.csr_we):
            with m.Switch(self.csr_addr):
                with m.Case(CSR["N_TOKENS"]):
                    m.d.sync += n_tokens.eq(self.csr_wdata)
                with m.Case(CSR["N_BLOCKS"]):
                    m.d.sync += n_blocks.eq(self.csr_wdata)
                with m.Case(CSR["SCORE_SHIFT"]):
                    m.d.sync += score_shift.eq(self.csr_wdata)
                with m.Case(CSR["FINAL_SHIFT"]):
                    m.d.sync += final_shift.eq(self.csr_wdata)
        with m.Switch(self.csr_addr):
            with m.Case(CSR["STATUS"]):
                m.d.comb += self.csr_rdata.eq(Cat(self.busy, self.done))
            with m.Case(CSR["CYCLES"]):
                m.d.comb += self.csr_rdata.eq(cycles)
            with m.Case(CSR["ARRAY_BEATS"]):
                m.d.comb += self.csr_rdata.eq(beats)
            with m.Case(CSR["STALL_CYCLES"]):
                m.d.comb += self.csr_rdata.eq(cycles - beats)
            with m.Case(CSR["KEPT8"]):
                m.d.comb += self.csr_rdata.eq(sched.kept8)
            with m.Case(CSR["KEPT4"]):
                m.d.comb += self.csr_rdata.eq(sched.kept4)
            with m.Case(CSR["SKIPPED"]):
                m.d.comb += self.csr_rdata.eq(sched.skipped)

        # ---- buffers ---------------------------------------------------------------------------------
        row_layout = data.ArrayLayout(signed(8), d)
        m.submodules.kmem = kmem = Memory(shape=row_layout, depth=NPAD, init=[])
        m.submodules.vmem = vmem = Memory(shape=row_layout, depth=NPAD, init=[])
        m.submodules.qmem = qmem = Memory(shape=row_layout, depth=B, init=[])
        m.submodules.smem = smem = Memory(shape=signed(XW), depth=B * NPAD, init=[])
        acc_layout = data.ArrayLayout(signed(ACCO), R)
        m.submodules.accmem = accmem = Memory(shape=acc_layout, depth=B * (d // R), init=[])
        k_wr, v_wr, q_wr = kmem.write_port(), vmem.write_port(), qmem.write_port()
        k_rd = [kmem.read_port() for _ in range(LANES)]
        v_rd = vmem.read_port()
        q_rd = [qmem.read_port() for _ in range(R)]
        s_wr = [smem.write_port() for _ in range(R)]
        s_rd = [smem.read_port() for _ in range(LANES)]
        acc_wr = accmem.write_port()
        acc_rd = accmem.read_port()          # drain read-modify-write
        out_rd = accmem.read_port()          # output stage

        m_regs = [Signal(signed(XW), init=-(1 << (XW - 1)), name=f"row_max{q}") for q in range(B)]
        l_regs = [Signal(cfg.row_sum_width, name=f"row_sum{q}") for q in range(B)]
        cq_i = Signal(16)

        # ---- descriptors of tiles in flight (issue side -> drain side) ---------------------------------
        desc_layout = data.StructLayout({
            "pass_b": 1, "group": 8, "kg": 8, "rg": 8, "jpos": range(NB + 1), "j": range(NB), "four": 1,
            "ckf": 20, "cv": 16, "z": data.ArrayLayout(range(P_SHIFT_MAX + 1), LANES),
        })
        m.submodules.desc = desc = fifo.SyncFIFO(width=desc_layout.size, depth=4)
        desc_in = Signal(desc_layout)
        desc_out = Signal(desc_layout)
        m.d.comb += [desc.w_data.eq(desc_in), desc_out.eq(desc.r_data)]

        # ---- issue side: counters and the one-stage read pipeline feeding the array --------------------
        qb = Signal(range(NB + 1))          # query block
        tok = Signal(range(NPAD + 1))
        j = Signal(range(NB))
        jpos = Signal(range(NB + 1))
        four = Signal()
        ckf = Signal(20)
        cv = Signal(16)
        k = Signal(range(max(B, d) + 1))
        group = Signal(8)
        kg = Signal(8)
        rg = Signal(8)
        z_regs = Array(Signal(range(P_SHIFT_MAX + 1), name=f"z{n}") for n in range(LANES))
        xmax = [Signal(signed(XW), name=f"seg_max{n}") for n in range(LANES)]

        keys_per_tile = Signal(range(LANES + 1))
        m.d.comb += keys_per_tile.eq(Mux(four, LANES, C))

        s1 = Signal(data.StructLayout({"valid": 1, "pass_b": 1, "k": range(max(B, d)), "rg": 8, "group": 8,
                                       "four": 1, "last": 1, "key_valid": 1, "first_rg": 1}))
        adv = Signal()
        fire = Signal()
        m.d.comb += adv.eq(~s1.valid | array.a.ready)
        for port in (*k_rd, v_rd, *q_rd, *s_rd):
            m.d.comb += port.en.eq(adv)

        # Stage 1 -> array payloads.
        four_s1 = s1.four
        m.d.comb += [array.a.valid.eq(s1.valid), array.b.valid.eq(s1.valid),
                     array.a.payload.last.eq(s1.last)]
        mode_a = Mux(four_s1, PEMode.INT4, PEMode.INT8)
        mode_b = Mux(four_s1, PEMode.UINT4, PEMode.INT8)
        m.d.comb += array.a.payload.mode.eq(Mux(s1.pass_b, mode_b, mode_a))

        def lane_row_max(n, four_sig, group_sig):
            """Row maximum of the query on P lane n: query group*2C + n (4-bit) or group*C + n (8-bit)."""
            wide = Array(m_regs[g * LANES + n] for g in range(B // LANES))[group_sig]
            if n >= C:
                return wide
            return Mux(four_sig, wide, Array(m_regs[g * C + n] for g in range(B // C))[group_sig])

        # P path (pass B): per lane, exponent -> quantizer, from the score buffer's read data.
        e_lane = [Signal(cfg.exp_bits + 1, name=f"e{n}") for n in range(LANES)]
        p_lane = [Signal(7, name=f"p{n}") for n in range(LANES)]
        m_lane = [Signal(signed(XW), name=f"m_lane{n}") for n in range(LANES)]
        for n in range(LANES):
            m.d.comb += m_lane[n].eq(lane_row_max(n, four_s1, s1.group))
            exp = Exp2Unit(cfg, XW + 1)
            quant = PQuantizer(cfg)
            m.submodules[f"exp{n}"] = exp
            m.submodules[f"quant{n}"] = quant
            t = Signal(XW + 1, name=f"t{n}")
            m.d.comb += [
                t.eq(m_lane[n] - s_rd[n].data),
                exp.t.eq(t),
                e_lane[n].eq(Mux(s1.key_valid, exp.e, 0)),
                quant.e.eq(e_lane[n]), quant.z.eq(z_regs[n]), quant.four_bit.eq(four_s1),
                p_lane[n].eq(quant.p),
            ]

        reduce4 = lambda x: Mux(x >= 120, 7, (x + 8) >> 4)   # clip((x + 8) >> 4, -8, 7)
        for r in range(R):
            a_qk = q_rd[r].data[s1.k]
            a_pv = v_rd.data[s1.rg * R + r] if d > R else v_rd.data[r]
            m.d.comb += array.a.payload.a[r].eq(Mux(s1.pass_b, a_pv, a_qk))
        for c in range(C):
            word = array.b.payload.b[c]
            k_lo, k_hi = k_rd[2 * c].data[s1.k], k_rd[2 * c + 1].data[s1.k]
            with m.If(~s1.pass_b):
                with m.If(four_s1):
                    m.d.comb += [word.int4[0].eq(reduce4(k_lo)), word.int4[1].eq(reduce4(k_hi))]
                with m.Else():
                    m.d.comb += word.int8.eq(k_rd[c].data[s1.k])
            with m.Else():
                with m.If(four_s1):
                    m.d.comb += [word.uint4[0].eq(p_lane[2 * c]), word.uint4[1].eq(p_lane[2 * c + 1])]
                with m.Else():
                    m.d.comb += word.int8.eq(p_lane[c])

        transfer = Signal()
        m.d.comb += transfer.eq(s1.valid & array.a.ready)
        with m.If(transfer):
            m.d.sync += beats.eq(beats + 1)
            with m.If(s1.pass_b & s1.first_rg):
                for q in range(B):
                    lane_wide, lane_narrow = q % LANES, q % C
                    hit_wide = four_s1 & (s1.group == q // LANES)
                    hit_narrow = ~four_s1 & (s1.group == q // C)
                    with m.If(hit_wide):
                        m.d.sync += l_regs[q].eq(l_regs[q] + e_lane[lane_wide])
                    with m.Elif(hit_narrow):
                        m.d.sync += l_regs[q].eq(l_regs[q] + e_lane[lane_narrow])
        with m.If(adv):
            m.d.sync += s1.valid.eq(fire)

        # ---- drain side ------------------------------------------------------------------------------
        m.d.comb += array.c.ready.eq(1)
        beat_n = Signal(range(LANES))
        drain = array.c.valid
        with m.If(drain):
            m.d.sync += beat_n.eq(Mux(array.c.payload.last, 0, beat_n + 1))
        m.d.comb += desc.r_en.eq(drain & array.c.payload.last)

        # Pass A: scale the scores, store them, update row maxima.
        key_in_block = Signal(range(B))
        m.d.comb += key_in_block.eq(desc_out.kg * Mux(desc_out.four, LANES, C) + beat_n)
        key_ok = Signal()
        m.d.comb += key_ok.eq(desc_out.j * B + key_in_block < n_tokens)
        for r in range(R):
            product = Signal(signed(cfg.acc_width + 16 + 21), name=f"scaled{r}")
            x = Signal(signed(XW), name=f"x{r}")
            m.d.comb += [
                product.eq(array.c.payload.c[r] * cq_i * desc_out.ckf),
                x.eq((product + ((Const(1, 64) << score_shift) >> 1)) >> score_shift),
                s_wr[r].addr.eq((desc_out.group * R + r) * NPAD + desc_out.jpos * B + key_in_block),
                s_wr[r].data.eq(x),
                s_wr[r].en.eq(drain & ~desc_out.pass_b),
            ]
            for q in range(r, B, R):
                with m.If(drain & ~desc_out.pass_b & key_ok & (desc_out.group == q // R) & (x > m_regs[q])):
                    m.d.sync += m_regs[q].eq(x)

        # Pass B: output accumulation, read-modify-write over two cycles.
        d2 = Signal(data.StructLayout({"valid": 1, "addr": range(B * (d // R)), "first": 1, "z": 4, "cv": 16,
                                       "u": data.ArrayLayout(signed(cfg.acc_width), R)}))
        query_b = Signal(range(B))
        m.d.comb += query_b.eq(desc_out.group * Mux(desc_out.four, LANES, C) + beat_n)
        m.d.comb += acc_rd.addr.eq(query_b * (d // R) + desc_out.rg)
        m.d.comb += acc_rd.en.eq(1)
        m.d.sync += [
            d2.valid.eq(drain & desc_out.pass_b),
            d2.addr.eq(query_b * (d // R) + desc_out.rg),
            d2.first.eq(desc_out.jpos == 0),
            d2.z.eq(desc_out.z[beat_n]),
            d2.cv.eq(desc_out.cv),
        ]
        for r in range(R):
            m.d.sync += d2.u[r].eq(array.c.payload.c[r])
            term = Signal(signed(cfg.acc_width + 17), name=f"term{r}")
            m.d.comb += [
                term.eq((d2.u[r] * d2.cv + ((Const(1, 17) << d2.z) >> 1)) >> d2.z),
                acc_wr.data[r].eq(Mux(d2.first, 0, acc_rd.data[r]) + term),
            ]
        m.d.comb += [acc_wr.addr.eq(d2.addr), acc_wr.en.eq(d2.valid)]

        # ---- output stage ----------------------------------------------------------------------------
        o_q = Signal(range(B + 1))
        o_rg = Signal(range(d // R + 1))
        o1 = Signal(data.StructLayout({"valid": 1, "q": range(B), "last": 1}))
        adv_o = Signal()
        fire_o = Signal()
        m.d.comb += [adv_o.eq(~o1.valid | self.o.ready), out_rd.en.eq(adv_o),
                     out_rd.addr.eq(o_q * (d // R) + o_rg)]
        with m.If(adv_o):
            m.d.sync += o1.valid.eq(fire_o)
        row_sum = Signal(cfg.row_sum_width)
        recip = Signal(cfg.recip_bits + 1)
        pre = ACCO - 32 if ACCO > 32 else 0
        m.d.comb += [row_sum.eq(Array(l_regs)[o1.q]),
                     recip.eq(Mux(row_sum == 0, 0, Const(1 << cfg.recip_bits, cfg.recip_bits + 1) // row_sum))]
        limit = 1 << (cfg.out_bits - 1)
        for r in range(R):
            acc_pre = Signal(signed(ACCO - pre + 1), name=f"acc_pre{r}")
            scaled = Signal(signed(ACCO - pre + cfg.recip_bits + 2), name=f"scaled_out{r}")
            code = Signal(signed(ACCO - pre + cfg.recip_bits + 2), name=f"code{r}")
            m.d.comb += [
                acc_pre.eq((out_rd.data[r] + ((1 << pre) >> 1)) >> pre),
                scaled.eq(acc_pre * recip),
                code.eq((scaled + ((Const(1, 64) << final_shift) >> 1)) >> final_shift),
                self.o.payload.o[r].eq(Mux(code >= limit, limit - 1, Mux(code < -limit, -limit, code))),
            ]
        m.d.comb += [self.o.valid.eq(o1.valid), self.o.payload.last.eq(o1.last)]

        # ---- control FSM -----------------------------------------------------------------------------
        with m.If(self.busy):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += sched.row.eq(qb)
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        seg = Signal(range(B + 2))
        seen = Signal()                       # prescan: the score read issued last cycle is valid now
        seen_key = Signal(range(B))
        m.d.comb += k_wr.data.eq(self.kv.payload.k)
        m.d.comb += [k_wr.addr.eq(tok), v_wr.addr.eq(tok), v_wr.data.eq(self.kv.payload.v),
                     q_wr.addr.eq(tok), q_wr.data.eq(self.q.payload.q)]
        # A tile's first beat pushes its descriptor: it may issue only when the descriptor FIFO has room.
        can_issue = Signal()
        m.d.comb += can_issue.eq((k != 0) | desc.w_rdy)
        reset_rows = Signal()
        with m.If(reset_rows):
            m.d.sync += [reg.eq(-(1 << (XW - 1))) for reg in m_regs]
            m.d.sync += [reg.eq(0) for reg in l_regs]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [busy.eq(1), self.done.eq(0), cycles.eq(0), beats.eq(0), tok.eq(0), qb.eq(0)]
                    m.d.comb += sched.clear.eq(1)
                    m.next = "LOAD_KV"
            with m.State("LOAD_KV"):
                m.d.comb += [self.kv.ready.eq(1), k_wr.en.eq(self.kv.valid), v_wr.en.eq(self.kv.valid)]
                with m.If(self.kv.valid):
                    m.d.sync += tok.eq(tok + 1)
                    with m.If(tok == n_blocks * B - 1):
                        m.d.sync += tok.eq(0)
                        m.next = "LOAD_Q"
            with m.State("LOAD_Q"):
                m.d.comb += [self.q.ready.eq(1), q_wr.en.eq(self.q.valid), tables["cq"].addr.eq(qb)]
                with m.If(self.q.valid):
                    m.d.sync += tok.eq(tok + 1)
                    with m.If(tok == B - 1):
                        m.d.comb += [reset_rows.eq(1), sched.start.eq(1), sched.count.eq(1)]
                        m.d.sync += [tok.eq(0), jpos.eq(0), cq_i.eq(tables["cq"].data)]
                        m.next = "A_NEXT"
            with m.State("A_NEXT"):
                m.d.comb += [sched.o.ready.eq(1), tables["ck"].addr.eq(sched.o.payload.j)]
                with m.If(sched.o.valid):
                    with m.If(sched.o.payload.end):
                        m.next = "A_WAIT"
                    with m.Else():
                        four_next = sched.o.payload.bits == 4
                        m.d.sync += [j.eq(sched.o.payload.j), four.eq(four_next), k.eq(0), group.eq(0),
                                     kg.eq(0), ckf.eq(Mux(four_next, tables["ck"].data << 4, tables["ck"].data))]
                        m.next = "A_TILES"
            with m.State("A_TILES"):
                m.d.comb += fire.eq(adv & can_issue)
                for r in range(R):
                    m.d.comb += q_rd[r].addr.eq(group * R + r)
                for n in range(LANES):
                    m.d.comb += k_rd[n].addr.eq(j * B + kg * keys_per_tile + n)
                m.d.comb += [desc_in.pass_b.eq(0), desc_in.group.eq(group), desc_in.kg.eq(kg),
                             desc_in.jpos.eq(jpos), desc_in.j.eq(j), desc_in.four.eq(four), desc_in.ckf.eq(ckf),
                             desc.w_en.eq(fire & (k == 0))]
                with m.If(fire):
                    m.d.sync += [s1.pass_b.eq(0), s1.k.eq(k), s1.four.eq(four), s1.last.eq(k == d - 1)]
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == d - 1):
                        m.d.sync += [k.eq(0), group.eq(group + 1)]
                        with m.If(group == B // R - 1):
                            m.d.sync += [group.eq(0), kg.eq(kg + 1)]
                            with m.If(kg == Mux(four, B // LANES, B // C) - 1):
                                m.d.sync += jpos.eq(jpos + 1)
                                m.next = "A_NEXT"
            with m.State("A_WAIT"):
                with m.If(~s1.valid & (desc.r_level == 0)):
                    m.d.comb += [sched.start.eq(1), sched.count.eq(0)]
                    m.d.sync += jpos.eq(0)
                    m.next = "B_NEXT"
            with m.State("B_NEXT"):
                m.d.comb += [sched.o.ready.eq(1), tables["cv8"].addr.eq(sched.o.payload.j),
                             tables["cv4"].addr.eq(sched.o.payload.j)]
                with m.If(sched.o.valid):
                    with m.If(sched.o.payload.end):
                        m.next = "B_WAIT"
                    with m.Else():
                        four_next = sched.o.payload.bits == 4
                        m.d.sync += [j.eq(sched.o.payload.j), four.eq(four_next), group.eq(0), rg.eq(0),
                                     k.eq(0), seg.eq(0),
                                     cv.eq(Mux(four_next, tables["cv4"].data, tables["cv8"].data))]
                        m.next = "B_PRESCAN"
            with m.State("B_PRESCAN"):
                # Wait until stage 1 is empty (its P path reads the score buffer's ports), then read the
                # block's scores for this query group, one key per cycle, tracking each lane's maximum.
                scanning = Signal()
                m.d.comb += scanning.eq(~s1.valid & (seg < B))
                for n in range(LANES):
                    m.d.comb += s_rd[n].addr.eq((group * keys_per_tile + n) * NPAD + jpos * B + seg)
                m.d.sync += [seen.eq(scanning), seen_key.eq(seg)]
                with m.If(scanning):
                    m.d.sync += seg.eq(seg + 1)
                    with m.If(seg == 0):
                        m.d.sync += [x.eq(-(1 << (XW - 1))) for x in xmax]
                with m.If(seen & (j * B + seen_key < n_tokens)):
                    for n in range(LANES):
                        with m.If((s_rd[n].data > xmax[n]) | (seen_key == 0)):
                            m.d.sync += xmax[n].eq(s_rd[n].data)
                with m.If(~scanning & seen):
                    m.next = "B_ZCALC"
            with m.State("B_ZCALC"):
                for n in range(LANES):
                    peak_exp = Exp2Unit(cfg, XW + 1)
                    lz = LeadingZeroShift(cfg)
                    m.submodules[f"peak_exp{n}"] = peak_exp
                    m.submodules[f"lz{n}"] = lz
                    m.d.comb += [peak_exp.t.eq(lane_row_max(n, four, group) - xmax[n]), lz.peak.eq(peak_exp.e)]
                    m.d.sync += z_regs[n].eq(lz.z)
                m.d.sync += seen.eq(0)
                m.next = "B_TILES"
            with m.State("B_TILES"):
                m.d.comb += fire.eq(adv & can_issue)
                m.d.comb += v_rd.addr.eq(j * B + k)
                for n in range(LANES):
                    m.d.comb += s_rd[n].addr.eq((group * keys_per_tile + n) * NPAD + jpos * B + k)
                m.d.comb += [desc_in.pass_b.eq(1), desc_in.group.eq(group), desc_in.rg.eq(rg),
                             desc_in.jpos.eq(jpos), desc_in.j.eq(j), desc_in.four.eq(four), desc_in.cv.eq(cv),
                             desc.w_en.eq(fire & (k == 0))]
                for n in range(LANES):
                    m.d.comb += desc_in.z[n].eq(z_regs[n])
                with m.If(fire):
                    m.d.sync += [s1.pass_b.eq(1), s1.k.eq(k), s1.rg.eq(rg), s1.group.eq(group), s1.four.eq(four),
                                 s1.last.eq(k == B - 1), s1.key_valid.eq(j * B + k < n_tokens),
                                 s1.first_rg.eq(rg == 0)]
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == B - 1):
                        m.d.sync += [k.eq(0), rg.eq(rg + 1)]
                        with m.If(rg == d // R - 1):
                            m.d.sync += [rg.eq(0), group.eq(group + 1), seg.eq(0)]
                            with m.If(group == Mux(four, B // LANES, B // C) - 1):
                                m.d.sync += jpos.eq(jpos + 1)
                                m.next = "B_NEXT"
                            with m.Else():
                                m.next = "B_PRESCAN"
            with m.State("B_WAIT"):
                with m.If(~s1.valid & (desc.r_level == 0) & ~d2.valid):
                    m.d.sync += [o_q.eq(0), o_rg.eq(0)]
                    m.next = "OUT"
            with m.State("OUT"):
                issuing = Signal()
                m.d.comb += [issuing.eq(o_q < B), fire_o.eq(adv_o & issuing)]
                with m.If(fire_o):
                    m.d.sync += [o1.q.eq(o_q),
                                 o1.last.eq((o_q == B - 1) & (o_rg == d // R - 1) & (qb == n_blocks - 1))]
                    m.d.sync += o_rg.eq(o_rg + 1)
                    with m.If(o_rg == d // R - 1):
                        m.d.sync += [o_rg.eq(0), o_q.eq(o_q + 1)]
                with m.If(~issuing & ~o1.valid):
                    m.d.sync += qb.eq(qb + 1)
                    with m.If(qb == n_blocks - 1):
                        m.d.sync += [busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "LOAD_Q"
        return m
