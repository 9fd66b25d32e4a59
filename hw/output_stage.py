"""Output stage: per query, the reciprocal of its row sum and the output codes of its accumulators.

Golden twin: :func:`paro.sw.golden.output_stage` (``r = floor(2**recip_bits / l)``,
``codes = clip(round(round(A / 2**pre_shift) * r / 2**final_shift))`` in ``out_bits`` signed bits).

``start`` (one cycle, after a query block's pass B has drained) begins the block: the stage then reads the
accumulator memory one word per cycle (query-major, ``d/R`` words per query, ``B * d/R`` in all) through a
one-stage pipeline and emits one ``o`` beat per word: ``R`` codes. Back-pressure on ``o`` holds the pipeline
(nothing is lost or repeated). ``idle`` is high when the block's last beat has left (and before the first
start). The stage reads ``row_sum`` while it runs: the engine keeps the row sums until it is idle.
The reciprocal is a combinational divider: one per engine, used once per beat.
"""

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Assert, Assume
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from .accumulator import accumulator_layout
from .component import ConfiguredComponent
from .formal import held
from .rounding import round_shift

__all__ = ["OutputStage", "o_layout", "formal_properties"]


def o_layout(config):
    """One output beat: ``rows`` codes of ``out_bits`` (one query, ``rows`` head dimensions)."""
    return data.StructLayout({"o": data.ArrayLayout(signed(config.out_bits), config.rows)})


class OutputStage(ConfiguredComponent):
    def __init__(self, config):
        B, groups = config.block_size, config.head_dim // config.rows
        super().__init__(config, {
            "start": In(1), "final_shift": In(7), "idle": Out(1),
            "row_sum": In(data.ArrayLayout(unsigned(config.row_sum_width), B)),
            "rd_addr": Out(range(B * groups)), "rd_en": Out(1), "rd_data": In(accumulator_layout(config)),
            "o": Out(stream.Signature(o_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B, R, groups = cfg.block_size, cfg.rows, cfg.head_dim // cfg.rows
        query = Signal(range(B + 1), init=B)           # B: no block in progress
        group = Signal(range(groups + 1))
        staged = Signal(data.StructLayout({"valid": 1, "query": range(B)}))
        advance, fire = Signal(), Signal()
        m.d.comb += [advance.eq(~staged.valid | self.o.ready), fire.eq(advance & (query < B)),
                     self.rd_en.eq(advance), self.rd_addr.eq(query * groups + group),
                     self.idle.eq((query == B) & ~staged.valid)]
        with m.If(advance):
            m.d.sync += staged.valid.eq(fire)
        with m.If(fire):
            m.d.sync += [staged.query.eq(query), group.eq(group + 1)]
            with m.If(group == groups - 1):
                m.d.sync += [group.eq(0), query.eq(query + 1)]
        with m.If(self.start):
            m.d.sync += [query.eq(0), group.eq(0)]

        row_sum = Signal(cfg.row_sum_width)
        recip = Signal(cfg.recip_bits + 1)
        m.d.comb += [row_sum.eq(Array(self.row_sum[q] for q in range(B))[staged.query]),
                     recip.eq(Mux(row_sum == 0, 0, Const(1 << cfg.recip_bits, cfg.recip_bits + 1) // row_sum))]
        pre, limit, acc_width = cfg.output_pre_shift, 1 << (cfg.out_bits - 1), cfg.acc_out_width
        for r in range(R):
            acc_pre = Signal(signed(acc_width - pre + 1), name=f"acc_pre{r}")
            scaled = Signal(signed(acc_width - pre + cfg.recip_bits + 2), name=f"scaled_out{r}")
            code = Signal(signed(acc_width - pre + cfg.recip_bits + 2), name=f"code{r}")
            m.d.comb += [
                acc_pre.eq(round_shift(self.rd_data[r], pre)),
                scaled.eq(acc_pre * recip),
                code.eq(round_shift(scaled, self.final_shift)),
                self.o.payload.o[r].eq(Mux(code >= limit, limit - 1, Mux(code < -limit, -limit, code))),
            ]
        m.d.comb += self.o.valid.eq(staged.valid)
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``o`` keeps the stream rules, so back-pressure from the memory
    writer loses and repeats nothing. The payload is a function of the stage register and the accumulator
    memory's read data, both of which move only with ``rd_en``, and of ``row_sum`` and ``final_shift``, which
    the engine holds while a block runs; so the proof shows ``valid`` held and ``rd_en`` low in every cycle a
    beat waits (comparing the payload itself would put the reciprocal's divider in the solver)."""
    m.d.comb += Assert(~(dut.o.valid & ~dut.o.ready) | ~dut.rd_en, "o: the stage and the read data hold")
    held(m, dut.o.valid, dut.o.ready, dut.o.valid, "o")
    m.d.comb += Assume(~dut.start | dut.idle)
