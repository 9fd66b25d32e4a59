"""Speculation unit: SimPicker's block classes of one query-block row from its block-reduced scores.

Golden twins: :func:`paro.sw.golden.speculation_masses` and :func:`paro.sw.golden.speculation_classes`
(docs/simpicker.md). Per key block ``j`` of the row the unit takes the block-reduced score ``x_j``, whether a
plan allows the block and its real keys; it estimates the block's mass ``m_j = 2**-(best - x_j) * keys_j``
(``best``: the largest ``x`` of the live blocks, those allowed with real keys; 0 for the others) with the
engine's exponent unit, and classes each block by the mass of the blocks ranked before it (larger, or equal
with a lower index): ``before_j``. Important (``SPEC_FULL``) while ``before_j * 2**16 < important * total``,
and always for the first-ranked block; negligible (``SPEC_SKIP``) when ``(total - before_j) * 2**16 <=
negligible * total`` or ``m_j = 0``; else unimportant (``SPEC_LUT``). No sorter: ``before_j`` is a pass over
the row's masses per block.

Streams and timing (``n`` key blocks in the row, at most ``max_blocks``):

``i`` (in)
    One beat per key block, in order: ``x``, ``allowed``, ``keys``, ``last`` on the row's last block. Taken
    one a cycle while the unit loads a row (``n`` cycles); refused while it classes one.
``o`` (out)
    One beat per key block, in order: ``cls`` (``SPEC_*``) and ``last``. Masses take ``2n`` cycles after the
    row's last input beat, then each block's class ``n + 2`` cycles (a pass over the row's masses), and
    waits on ``o.ready``: without gaps or stalls a row takes ``n**2 + 5n`` cycles from its first input beat
    to the cycle after its last class (O(n**2) comparisons, no sorting network).
``important``, ``negligible``
    The thresholds in units of ``2**-SPEC_FRAC_BITS`` (:meth:`paro.sw.simpicker.SimPickerParams.codes`); held
    while a row is classed.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_WIDTH
from paro.sw.golden import SPEC_FRAC_BITS, SPEC_FULL, SPEC_LUT, SPEC_SKIP

from .component import ConfiguredComponent
from .softmax import Exp2Unit

__all__ = ["SpeculationUnit", "block_layout", "class_layout", "mass_width"]


def block_layout(config):
    """An ``i`` beat: one key block of the row."""
    return data.StructLayout({"x": signed(SCORE_WIDTH), "allowed": 1, "keys": range(config.block_size + 1),
                              "last": 1})


def class_layout():
    """An ``o`` beat: one key block's class."""
    return data.StructLayout({"cls": 2, "last": 1})


def mass_width(config):
    """Unsigned width of an estimated block mass: a numerator (``exp_bits + 1`` bits) times ``keys``."""
    return config.exp_bits + 1 + config.block_size.bit_length()


class SpeculationUnit(ConfiguredComponent):
    def __init__(self, config):
        super().__init__(config, {
            "i": In(stream.Signature(block_layout(config))),
            "o": Out(stream.Signature(class_layout())),
            "important": In(range((1 << SPEC_FRAC_BITS) + 1)),
            "negligible": In(range((1 << SPEC_FRAC_BITS) + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        depth = cfg.max_blocks
        entry = data.StructLayout({"x": signed(SCORE_WIDTH), "live": 1, "keys": range(cfg.block_size + 1)})
        m.submodules.blocks = blocks = Memory(shape=entry, depth=depth, init=[])
        m.submodules.masses = masses = Memory(shape=unsigned(mass_width(cfg)), depth=depth, init=[])
        block_wr, block_rd = blocks.write_port(), blocks.read_port()
        mass_wr, mass_j, mass_k = masses.write_port(), masses.read_port(), masses.read_port()
        m.submodules.exp = exp = Exp2Unit(cfg, SCORE_WIDTH + 1)

        count = Signal(range(depth + 1))          # blocks in the row
        best = Signal(signed(SCORE_WIDTH), init=-(1 << (SCORE_WIDTH - 1)))
        total = Signal(mass_width(cfg) + depth.bit_length())
        j = Signal(range(depth + 1))
        k = Signal(range(depth + 1))
        before = Signal(len(total))
        last_k = Signal()                         # the read of the row's last mass is in flight
        mass = mass_j.data                        # m_j: its address is held at j while block j is classed

        beat = self.i.payload
        live = Signal()
        m.d.comb += live.eq(beat.allowed & (beat.keys != 0))
        m.d.comb += [block_wr.addr.eq(count), block_wr.data.x.eq(beat.x), block_wr.data.live.eq(live),
                     block_wr.data.keys.eq(beat.keys)]
        m.d.comb += [block_rd.addr.eq(j), mass_wr.addr.eq(j), mass_j.addr.eq(j), mass_k.addr.eq(k)]
        stored = block_rd.data
        m.d.comb += [exp.t.eq((best - stored.x).as_unsigned()),
                     mass_wr.data.eq(Mux(stored.live, exp.e * stored.keys, 0))]

        # before_j: the masses ranked ahead of block j (larger, or equal with a lower index).
        ahead = Signal()
        k_read = Signal(range(depth + 1))         # the index whose mass mass_k.data holds
        m.d.comb += ahead.eq((mass_k.data > mass) | ((mass_k.data == mass) & (k_read < j)))
        cls = Signal(2)
        tail = Signal(len(total))
        m.d.comb += tail.eq(total - before)
        with m.If(mass == 0):
            m.d.comb += cls.eq(SPEC_SKIP)
        with m.Elif((before == 0) | ((before << SPEC_FRAC_BITS) < self.important * total)):
            m.d.comb += cls.eq(SPEC_FULL)
        with m.Elif((tail << SPEC_FRAC_BITS) <= self.negligible * total):
            m.d.comb += cls.eq(SPEC_SKIP)
        with m.Else():
            m.d.comb += cls.eq(SPEC_LUT)

        with m.FSM() as fsm:
            with m.State("LOAD"):
                with m.If(self.i.valid):
                    m.d.sync += count.eq(count + 1)
                    with m.If(live & (beat.x > best)):
                        m.d.sync += best.eq(beat.x)
                    with m.If(beat.last):
                        m.d.sync += [j.eq(0), total.eq(0)]
                        m.next = "MASS_READ"
            with m.State("MASS_READ"):               # block j's entry arrives on the next cycle
                m.next = "MASS_WRITE"
            with m.State("MASS_WRITE"):
                m.d.comb += mass_wr.en.eq(1)
                m.d.sync += [total.eq(total + mass_wr.data), j.eq(j + 1)]
                with m.If(j + 1 == count):
                    m.d.sync += j.eq(0)
                    m.next = "CLASS_START"
                with m.Else():
                    m.next = "MASS_READ"
            with m.State("CLASS_START"):             # read m_j, start the pass at k = 0
                m.d.sync += [k.eq(1), k_read.eq(0), before.eq(0), last_k.eq(count == 1)]
                m.d.comb += mass_k.addr.eq(0)
                m.next = "CLASS_FIRST"
            with m.State("CLASS_FIRST"):             # m_j and m_0 arrive
                m.d.sync += self._step(before, ahead, mass_k.data, k, k_read, last_k, count)
                with m.If(last_k):
                    m.next = "CLASS_OUT"
                with m.Else():
                    m.next = "CLASS_PASS"
            with m.State("CLASS_PASS"):
                m.d.sync += self._step(before, ahead, mass_k.data, k, k_read, last_k, count)
                with m.If(last_k):
                    m.next = "CLASS_OUT"
            with m.State("CLASS_OUT"):
                with m.If(self.o.ready):
                    m.d.sync += j.eq(j + 1)
                    m.next = "CLASS_START"
                    with m.If(j + 1 == count):
                        m.d.sync += [count.eq(0), best.eq(-(1 << (SCORE_WIDTH - 1))), j.eq(0)]
                        m.next = "LOAD"
        # Outside the FSM's case statement: continuous assignments, defined from time 0 (an Icarus
        # `always @*` block only runs when an input changes, and the state starts at LOAD and stays there).
        m.d.comb += [self.i.ready.eq(fsm.ongoing("LOAD")), block_wr.en.eq(fsm.ongoing("LOAD") & self.i.valid),
                     self.o.valid.eq(fsm.ongoing("CLASS_OUT")), self.o.payload.cls.eq(cls),
                     self.o.payload.last.eq(j + 1 == count)]
        return m

    @staticmethod
    def _step(before, ahead, value, k, k_read, last_k, count):
        """One cycle of the pass: add ``m_k`` if it ranks ahead, advance the read address."""
        return [before.eq(before + Mux(ahead, value, 0)), k.eq(k + 1), k_read.eq(k), last_k.eq(k + 1 >= count)]
