"""Output stage: per query, the reciprocal of its row sum and the output codes of its accumulators.

Golden twin: :func:`paro.sw.golden.output_stage` (``r = floor(2**recip_bits / max(l, 2**exp_bits))``, 0 for
``l = 0``; ``codes = clip(round(round(A / 2**pre_shift) * r / 2**final_shift))`` in ``out_bits`` signed bits).

``start`` (one cycle, after a query block's pass B has drained) begins the block: from the next cycle the stage
takes one beat per cycle (query-major, ``d/R`` accumulator words per query, ``B * d/R`` in all) into a pipeline
of ``recip_stages`` divider stages: each computes ``RECIP_BITS_PER_STAGE`` quotient bits of ``2**recip_bits /
row_sum`` by restoring division (the beat's row sum taken as it enters, raised to ``2**exp_bits``; 0 gives 0).
A reciprocal has ``recip_quotient_bits`` bits (``row_sum_width + 1``): the higher quotient bits of a divisor
of at least ``2**exp_bits`` are 0, so the divider starts below them, and the product with the accumulator
has ``33 + recip_quotient_bits`` bits (61 for ``small``). As a beat leaves the last divider stage the stage
reads its accumulator word, and one cycle later offers it on ``o``: ``R`` codes. The first beat comes
``recip_stages + 1`` cycles after ``start``, then one a cycle (``recip_stages`` more than the single
combinational divider this replaces, which limited the engine's clock to a few MHz on ECP5). Back-pressure on
``o`` holds the whole pipeline and the read data (nothing is lost or repeated). ``idle`` is high when the
block's last beat has left (and before the first start). The stage reads ``row_sum`` while it runs: the engine
keeps the row sums until it is idle.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Assert, Assume
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.config import RECIP_BITS_PER_STAGE

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
        width, stages, quotient_bits = cfg.row_sum_width, cfg.recip_stages, cfg.recip_quotient_bits
        query = Signal(range(B + 1), init=B)           # B: no block in progress
        group = Signal(range(groups + 1))
        # Divider stage s holds a beat after (s + 1) * RECIP_BITS_PER_STAGE quotient bits; the output stage
        # ``out`` after all of them, with the accumulator word read as the beat entered it.
        divider = data.StructLayout({"valid": 1, "addr": range(B * groups), "divisor": width,
                                     "remainder": width + 1, "quotient": quotient_bits})
        pipe = [Signal(divider, name=f"divide{s}") for s in range(stages)]
        out = Signal(data.StructLayout({"valid": 1, "recip": quotient_bits}))
        advance, fire = Signal(), Signal()
        m.d.comb += [advance.eq(~out.valid | self.o.ready), fire.eq(advance & (query < B)),
                     self.rd_en.eq(advance), self.rd_addr.eq(pipe[-1].addr),
                     self.idle.eq((query == B) & ~out.valid & ~Cat(*(p.valid for p in pipe)).any())]
        with m.If(fire):
            m.d.sync += group.eq(group + 1)
            with m.If(group == groups - 1):
                m.d.sync += [group.eq(0), query.eq(query + 1)]
        with m.If(self.start):
            m.d.sync += [query.eq(0), group.eq(0)]

        def divide(state, first_bit):
            """``RECIP_BITS_PER_STAGE`` restoring-division steps of ``2**recip_bits / divisor`` from quotient
            bit ``first_bit`` down: ``(remainder, quotient)`` expressions. The partial remainder entering the
            first stage is ``2**recip_bits >> quotient_bits`` (the dividend's bits above the quotient's)."""
            remainder, quotient = state["remainder"], state["quotient"]
            for bit in range(first_bit, max(first_bit - RECIP_BITS_PER_STAGE, -1), -1):
                shifted = Cat(Const(0, 1), remainder[:width])          # the dividend's bits here are 0
                fits = shifted >= state["divisor"]
                remainder = Mux(fits, shifted - state["divisor"], shifted)[:width + 1]
                quotient = quotient | Mux(fits, 1 << bit, 0)
            return remainder, quotient

        row_sum, one = Signal(width), 1 << cfg.exp_bits
        m.d.comb += row_sum.eq(Array(self.row_sum[q] for q in range(B))[query])
        with m.If(advance):
            previous = {"valid": fire, "addr": query * groups + group,
                        "divisor": Mux((row_sum != 0) & (row_sum < one), one, row_sum),
                        "remainder": Const(1 << (cfg.recip_bits - quotient_bits), width + 1),
                        "quotient": Const(0, quotient_bits)}
            for s, stage in enumerate(pipe):
                remainder, quotient = divide(previous, quotient_bits - 1 - s * RECIP_BITS_PER_STAGE)
                m.d.sync += [stage.valid.eq(previous["valid"]), stage.addr.eq(previous["addr"]),
                             stage.divisor.eq(previous["divisor"]), stage.remainder.eq(remainder),
                             stage.quotient.eq(quotient)]
                previous = {name: stage[name] for name in ("valid", "addr", "divisor", "remainder", "quotient")}
            last = pipe[-1]
            m.d.sync += [out.valid.eq(last.valid), out.recip.eq(Mux(last.divisor == 0, 0, last.quotient))]

        pre, limit, acc_width = cfg.output_pre_shift, 1 << (cfg.out_bits - 1), cfg.acc_out_width
        for r in range(R):
            acc_pre = Signal(signed(acc_width - pre + 1), name=f"acc_pre{r}")
            scaled = Signal(signed(acc_width - pre + quotient_bits + 1), name=f"scaled_out{r}")
            code = Signal(signed(acc_width - pre + quotient_bits + 1), name=f"code{r}")
            m.d.comb += [
                acc_pre.eq(round_shift(self.rd_data[r], pre)),
                scaled.eq(acc_pre * out.recip),
                code.eq(round_shift(scaled, self.final_shift)),
                self.o.payload.o[r].eq(Mux(code >= limit, limit - 1, Mux(code < -limit, -limit, code))),
            ]
        m.d.comb += self.o.valid.eq(out.valid)
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
