"""Speculator: SimPicker's block classes of a query-block row from pooled Q and K, on chip.

Golden twins: :func:`paro.sw.golden.speculation_scores` (``x_j = round(pooled_q . pooled_k_j * cq * ck_j /
2**shift)``, the score unit's own scaling and saturation) followed by :func:`paro.sw.golden.speculation_masses` and
:func:`paro.sw.golden.speculation_classes` (in :class:`~paro.hw.speculation.SpeculationUnit`).

Before a head's rows, the pooled K rows (:class:`~paro.hw.pooling.PoolingUnit`) and their key multipliers go
in through ``k_wr``. A row beat on ``i`` brings the pooled Q row of a query block, its multiplier ``cq``, the
score shift, the head's key blocks and real tokens, and the plan's row of allowed blocks (``allowed``, one bit
per key block; all ones without a plan). For each key block ``j`` the unit reads the pooled K row
(one cycle), forms the dot product on ``lanes`` multipliers (``head_dim / lanes`` cycles), scales and rounds
it (one cycle) and hands ``x_j``, the allowed bit and the block's real keys to the speculation unit; the
classes come out on ``o`` as that unit gives them. A row of ``n`` key blocks takes ``n * (head_dim / lanes +
2)`` cycles of products, then the speculation unit's ``n**2 + 4n`` (:mod:`paro.hw.speculation`).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.sw.golden import SPEC_FRAC_BITS

from .component import ConfiguredComponent, check_lanes
from .pooling import pooled_layout
from .score_unit import scaled_score
from .speculation import SpeculationUnit, class_layout

__all__ = ["Speculator", "row_layout", "key_layout", "MULT_WIDTH"]

#: Width of the score multipliers ``cq`` and ``ck`` (:func:`paro.sw.golden.int_multipliers`, 15 bits).
MULT_WIDTH = 15


def row_layout(config):
    """An ``i`` beat: one query block's pooled Q row and what scaling and the row's extent need."""
    return data.StructLayout({"q": pooled_layout(config), "cq": unsigned(MULT_WIDTH), "shift": range(64),
                              "n_blocks": range(1, config.max_blocks + 1), "n_tokens": range(config.max_seq_len + 1),
                              "allowed": config.max_blocks})


def key_layout(config):
    """A ``k_wr`` word: one key block's pooled K row and its multiplier."""
    return data.StructLayout({"k": pooled_layout(config), "ck": unsigned(MULT_WIDTH)})


class Speculator(ConfiguredComponent):
    @classmethod
    def check(cls, config, lanes=8):
        check_lanes(config, lanes, "speculator")

    def __init__(self, config, lanes=8):
        self._lanes = lanes
        blocks = config.max_blocks
        super().__init__(config, {
            "k_wr_en": In(1), "k_wr_addr": In(range(blocks)), "k_wr_data": In(key_layout(config)),
            "i": In(stream.Signature(row_layout(config))),
            "o": Out(stream.Signature(class_layout())),
            "important": In(range((1 << SPEC_FRAC_BITS) + 1)),
            "negligible": In(range((1 << SPEC_FRAC_BITS) + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, lanes = self._config, self._lanes
        B, d, blocks = cfg.block_size, cfg.head_dim, cfg.max_blocks
        m.submodules.keys = keys = Memory(shape=key_layout(cfg), depth=blocks, init=[])
        k_wr, k_rd = keys.write_port(), keys.read_port()
        m.d.comb += [k_wr.en.eq(self.k_wr_en), k_wr.addr.eq(self.k_wr_addr), k_wr.data.eq(self.k_wr_data)]
        m.submodules.spec = spec = SpeculationUnit(cfg)
        m.d.comb += [spec.important.eq(self.important), spec.negligible.eq(self.negligible),
                     self.o.valid.eq(spec.o.valid), self.o.payload.eq(spec.o.payload), spec.o.ready.eq(self.o.ready)]

        row = Signal(row_layout(cfg))
        j = Signal(range(blocks + 1))
        beat = Signal(range(d // lanes))
        dot = Signal(signed(16 + (d - 1).bit_length() + 1))   # d products of two INT8 codes
        m.d.comb += k_rd.addr.eq(j)
        stored = k_rd.data

        products = 0
        for lane in range(lanes):
            index = Signal(range(d), name=f"index{lane}")
            m.d.comb += index.eq(beat * lanes + lane)
            products += row.q[index] * stored.k[index]
        scaled = Signal(signed(len(dot) + 2 * MULT_WIDTH + 1))
        m.d.comb += scaled.eq(dot * (row.cq * stored.ck))
        x = scaled_score(m, scaled, row.shift, "x")
        real = Signal(signed(len(row.n_tokens) + 1))
        m.d.comb += real.eq(row.n_tokens - j * B)

        m.d.comb += [spec.i.payload.x.eq(x), spec.i.payload.allowed.eq(row.allowed.bit_select(j, 1)),
                     spec.i.payload.keys.eq(Mux(real >= B, B, Mux(real > 0, real, 0))),
                     spec.i.payload.last.eq(j + 1 == row.n_blocks)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    m.d.sync += [row.eq(self.i.payload), j.eq(0)]
                    m.next = "READ"
            with m.State("READ"):                  # key block j's pooled row arrives on the next cycle
                m.d.sync += [beat.eq(0), dot.eq(0)]
                m.next = "MAC"
            with m.State("MAC"):
                m.d.sync += [dot.eq(dot + products), beat.eq(beat + 1)]
                with m.If(beat == d // lanes - 1):
                    m.next = "SCORE"
            with m.State("SCORE"):                 # x_j to the speculation unit (it takes a beat a cycle)
                with m.If(spec.i.ready):
                    m.d.sync += j.eq(j + 1)
                    m.next = "READ"
                    with m.If(j + 1 == row.n_blocks):
                        m.next = "IDLE"
        # Outside the FSM's case statement: continuous assignments, defined from time 0 in Icarus too.
        m.d.comb += [self.i.ready.eq(fsm.ongoing("IDLE")), spec.i.valid.eq(fsm.ongoing("SCORE"))]
        return m
