"""LUT-based FP x INT multiplier: SimPicker's datapath for unimportant attention (no multipliers).

Golden twin: :func:`paro.sw.golden.lut_multiplier`.

Arithmetic. One FP operand ``p = mant << exp`` (``mant``: ``lut_mant_bits + 1`` bits, leading one explicit, any
value is computed exactly; ``exp`` in ``[0, lut_exp_max]``; :func:`paro.sw.golden.lut_fp` makes one from a
softmax numerator)
times ``L = lut_lanes`` signed INT8 operands ``v`` a beat. The operand builds a table ``T[j] = mant * j``,
``j = 0..15`` (constant multiples: shifts and adds, no multiplier); each lane splits its ``v`` into nibbles,
``v = 16 * high + low`` (``low`` unsigned, ``high`` signed), looks up ``T[low]`` and ``T[high mod 16]`` and
forms ``T[low] + ((T[high mod 16] - (high < 0 ? mant << 4 : 0)) << 4)``, then shifts it left by ``exp``. The
result is exact, ``mant * v * 2**exp``, in ``lut_product_width`` signed bits.

Tables. Two (a double buffer). A ``p`` beat is taken whenever a table is free and builds that table on the
edge that takes it; the lanes read the other table meanwhile, so the next operand's table is ready before the
current operand's run ends. Conflict rule: every lookup has a read port of its own (``2L`` 16:1 read
multiplexers on the serving table), so no two lanes ever contend for a port, whatever their values; a
banked table with fewer ports would stall when lanes need different entries of one bank.

Streams and timing.

``p`` (in)
    The FP operand of the next run. Taken while a table is free (``p.ready`` does not depend on ``v`` or
    ``o``); the table serves from the next cycle on.
``v`` (in)
    ``L`` INT8 lanes and ``last``; every beat until one with ``last`` uses the same operand, and ``last``
    frees its table. Taken while a table is built and ``o`` is empty or being read.
``o`` (out)
    The ``L`` products and ``last`` of each ``v`` beat, registered: a ``v`` beat taken on edge ``t`` is on
    ``o`` after ``t`` (latency 1 cycle). Throughput: one beat (``L`` products) a cycle while ``o.ready`` is
    high and operands arrive no slower than runs end; runs of any length, even one beat, follow each other
    without a bubble. Back-pressure on ``o`` stalls ``v``; nothing is lost or duplicated.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.sw.golden import LUT_ENTRIES

from .component import ConfiguredComponent
from .formal import stream_held

__all__ = ["LutMultiplier", "fp_layout", "lane_layout", "product_layout", "plain_multiplier", "formal_properties"]


def fp_layout(config):
    """The FP operand: ``mant << exp``, ``mant`` with its leading one explicit."""
    return data.StructLayout({"mant": unsigned(config.lut_mant_bits + 1), "exp": range(config.lut_exp_max + 1)})


#: One INT8 lane as its two nibbles: ``v = 16 * high + low``.
NIBBLES = data.StructLayout({"low": unsigned(4), "high": signed(4)})


def lane_layout(config):
    """A ``v`` beat: ``lut_lanes`` INT8 operands and the end of the operand's run."""
    return data.StructLayout({"v": data.ArrayLayout(NIBBLES, config.lut_lanes), "last": 1})


def product_layout(config):
    """An ``o`` beat: ``lut_lanes`` products and the end of the run."""
    return data.StructLayout({"products": data.ArrayLayout(signed(config.lut_product_width), config.lut_lanes),
                              "last": 1})


def plain_multiplier(config):
    """The baseline of the area report: :class:`LutMultiplier` with ``tables=False``."""
    return LutMultiplier(config, tables=False)


def _table_layout(config):
    return data.ArrayLayout(unsigned(config.lut_mant_bits + 5), LUT_ENTRIES)


def _multiples(mant):
    """``mant * j`` for ``j = 0 .. 15`` from shifts and seven adders: ``T[2j] = T[j] << 1``,
    ``T[2j + 1] = T[2j] + mant``."""
    table = [Const(0, 1), mant]
    for j in range(2, LUT_ENTRIES):
        table.append(table[j // 2] << 1 if j % 2 == 0 else table[j - 1] + mant)
    return table


class LutMultiplier(ConfiguredComponent):
    """``tables=False`` builds the baseline the area report compares with: the same streams, operand buffers
    and timing, but each lane multiplies ``mant * v`` with a plain ``(M + 1) x 8`` multiplier instead of
    looking its nibbles up (no tables)."""

    def __init__(self, config, tables=True):
        self._tables = bool(tables)
        super().__init__(config, {
            "p": In(stream.Signature(fp_layout(config))),
            "v": In(stream.Signature(lane_layout(config))),
            "o": Out(stream.Signature(product_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        tables = [Signal(_table_layout(cfg), name=f"table{k}") for k in range(2)]
        operands = [Signal(fp_layout(cfg), name=f"operand{k}") for k in range(2)]
        built = Signal(2)          # table k holds an operand's run (built, not yet retired)
        serving = Signal(1)        # the table the lanes read

        # Table building: the free table in line (the serving one if it is free, else the other).
        fill = Signal(1)
        m.d.comb += [fill.eq(Mux(built.bit_select(serving, 1), ~serving, serving)),
                     self.p.ready.eq(~built.all())]
        take_v = Signal()
        m.d.comb += [self.v.ready.eq(built.bit_select(serving, 1) & (~self.o.valid | self.o.ready)),
                     take_v.eq(self.v.valid & self.v.ready)]
        retire = Signal(2)
        m.d.comb += retire.eq(Mux(take_v & self.v.payload.last, 1 << serving, 0))
        taken_p = Signal(2)
        m.d.comb += taken_p.eq(Mux(self.p.valid & self.p.ready, 1 << fill, 0))
        m.d.sync += built.eq((built & ~retire) | taken_p)
        with m.If(take_v & self.v.payload.last):
            m.d.sync += serving.eq(~serving)
        for k in range(2):
            with m.If(taken_p[k]):
                m.d.sync += operands[k].eq(self.p.payload)
                if self._tables:
                    m.d.sync += [tables[k][j].eq(entry) for j, entry in enumerate(_multiples(self.p.payload.mant))]

        # Lanes: two lookups, a shift-add, the sign correction and the exponent shift.
        table = Signal(_table_layout(cfg))
        operand = Signal(fp_layout(cfg))
        m.d.comb += [table.eq(Mux(serving, tables[1], tables[0])),
                     operand.eq(Mux(serving, operands[1], operands[0]))]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take_v):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.last.eq(self.v.payload.last)]
            for lane in range(cfg.lut_lanes):
                nibbles = self.v.payload.v[lane]
                if not self._tables:
                    m.d.sync += self.o.payload.products[lane].eq(
                        (operand.mant * nibbles.as_value().as_signed()) << operand.exp)
                    continue
                high = Signal(signed(cfg.lut_mant_bits + 6), name=f"high{lane}")
                m.d.comb += high.eq(table[nibbles.high.as_unsigned()]
                                    - Mux(nibbles.high < 0, operand.mant << 4, 0))
                m.d.sync += self.o.payload.products[lane].eq((table[nibbles.low] + (high << 4)) << operand.exp)
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``o`` keeps the stream rules while ``p`` and ``v`` are assumed to keep theirs: back-pressure loses and repeats nothing."""
    stream_held(m, dut.p, "p", assume=True)
    stream_held(m, dut.v, "v", assume=True)
    stream_held(m, dut.o, "o")
