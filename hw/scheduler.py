"""Block scheduler: walks one query row of the BlockPlan bitmap and emits the kept key blocks in order.

Golden twin: the kept list of :func:`sw.golden.attention_block_row` (``(j, bits)`` for ``bitmap[i, j] > 0``,
in increasing ``j``).

Only two bitmap rows are on chip: a memory of two halves of ``ceil(max_blocks / head_dim)`` lines (one byte
per block, as in memory), which the fetcher fills with the row of query block ``i`` in half ``i % 2``
(``wr_en``, ``wr_addr``, ``wr_data``, a line at a time) together with its Q rows. A ``start`` pulse with
``row`` begins a walk of half ``row % 2``: every cycle the scheduler reads one entry (asynchronous read, a
byte of a line) and, for a kept block, loads it into its output register ``o`` (a ``lib.stream`` with ``j``,
``bits`` and ``end``); skipped (0-bit) blocks cost one cycle each and are never emitted, so they are never
fetched or computed. An entry of 4 is a 4-bit block, an entry of 2 a 2-bit block (in a build with 2-bit
blocks); any other non-zero entry runs at 8 bits (the contract allows only the configuration's bitwidths, and
:func:`paro.sw.contract.check_layer` refuses others). After the
last column it emits one ``end`` beat. The walk runs ahead of the consumer by one kept block (the output
register), so while the engine computes block ``j`` the scheduler already scans past the zeros to the next
kept block: skipping costs no array cycle unless a whole run of zeros is longer than a block's compute time.

Kept blocks come out in column order; the PE mode follows each block's bitwidth and mode changes cost no
cycle in the array, so no regrouping by bitwidth is needed.

Speculation (a build with ``spec_lanes``): ``mark_en`` with ``mark_half`` and ``mark_j`` marks block ``mark_j``
of half ``mark_half`` skipped, or with ``mark_low`` low-bit (at the clock edge; :class:`~.spec_control.SpecControl`
does it for the blocks it classes negligible, or unimportant on the low-bit path, after the row's bitmap
arrived and before its walks); a walk passes a skipped block as a 0-bit one and a low-bit block as a 4-bit one
(a 2-bit block stays 2-bit), or in a ``lut_path`` build while ``lut_marks`` is high (the head's ``SPEC`` is 3)
as a LUT-path block (``bits`` = :data:`~paro.sw.contract.LUT_BLOCK`, whatever its bitwidth). Writing a bitmap
line clears the marks of its blocks.

Counting (for the pass that has ``count`` set at ``start``): ``kept8``, ``kept4``, ``kept2`` and ``skipped`` are
high for one cycle per block of each kind the walk passes (the register file counts them); a LUT-path block
counts in ``kept4`` (its QK^T runs at 4 bits).
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import Assert, Assume
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.sw.contract import LUT_BLOCK, engine_buffers

from .component import EngineBlock
from .formal import free_constant, past, stream_held
from .word_mux import word_mux


__all__ = ["BlockScheduler", "kept_layout", "formal_properties", "formal_bounds"]


def block_bits(config, entry):
    """The bits a non-zero bitmap ``entry`` runs at: 4 for 4, 2 for 2 (builds with 2-bit blocks), else 8."""
    bits = Mux(entry == 4, 4, 8)
    return Mux(entry == 2, 2, bits) if 2 in config.bitwidths else bits


def kept_layout(max_blocks):
    return data.StructLayout({"j": range(max_blocks), "bits": 4, "end": 1})


class BlockScheduler(EngineBlock):
    def __init__(self, config):
        nb, lines = config.max_blocks, engine_buffers(config)["bitmap_rows"]["entries"]
        super().__init__(config, {
            "wr_en": In(1), "wr_addr": In(range(lines)), "wr_data": In(8 * config.head_dim),
            "n_blocks": In(range(nb + 1)),
            "start": In(1), "row": In(range(nb)), "count": In(1),
            "o": Out(stream.Signature(kept_layout(nb))),
            "kept8": Out(1), "kept4": Out(1), "kept2": Out(1), "skipped": Out(1),
            **({"mark_en": In(1), "mark_low": In(1), "mark_half": In(1), "mark_j": In(range(nb))}
               if config.spec_lanes else {}),
            **({"lut_marks": In(1)} if config.lut_path else {}),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        nb, d = cfg.max_blocks, cfg.head_dim
        half_lines = engine_buffers(cfg)["bitmap_rows"]["entries"] // 2
        m.submodules.bitmap = bitmap = Memory(shape=8 * d, depth=2 * half_lines, init=[])
        wr = bitmap.write_port()
        rd = bitmap.read_port(domain="comb")
        m.d.comb += [wr.en.eq(self.wr_en), wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data)]

        walking = Signal()
        counting = Signal()
        col = Signal(range(nb + 1))
        half = Signal()
        entry = Signal(8)
        lut = Signal()                  # the entry is a LUT-path block
        log2_d = d.bit_length() - 1
        m.d.comb += rd.addr.eq(half * half_lines + (col >> log2_d))
        if cfg.spec_lanes:
            # skip and low-bit marks, one each per entry of both halves, laid out as the bitmap lines
            skips, lows = Signal(2 * half_lines * d), Signal(2 * half_lines * d)
            with m.If(self.wr_en):
                m.d.sync += [skips.word_select(self.wr_addr, d).eq(0), lows.word_select(self.wr_addr, d).eq(0)]
            with m.If(self.mark_en):
                mark = self.mark_half * (half_lines * d) + self.mark_j
                m.d.sync += [skips.bit_select(mark, 1).eq(~self.mark_low), lows.bit_select(mark, 1).eq(self.mark_low)]
            here = half * (half_lines * d) + col
            raw = word_mux(rd.data, col[:log2_d], 8)
            lowered = Mux(lows.bit_select(here, 1) & (raw != 0) & (raw != 2), 4, raw)
            m.d.comb += entry.eq(Mux(skips.bit_select(here, 1), 0, lowered))
            if cfg.lut_path:
                m.d.comb += lut.eq(self.lut_marks & lows.bit_select(here, 1) & (raw != 0))
        else:
            m.d.comb += entry.eq(word_mux(rd.data, col[:log2_d], 8))
        free = ~self.o.valid | self.o.ready
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.start):
            m.d.sync += [walking.eq(1), col.eq(0), half.eq(self.row[0]), counting.eq(self.count),
                         self.o.valid.eq(0)]
        with m.Elif(walking & free):
            with m.If(col == self.n_blocks):
                m.d.sync += [walking.eq(0), self.o.valid.eq(1), self.o.payload.end.eq(1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
                bits = Mux(lut, LUT_BLOCK, block_bits(cfg, entry))
                with m.If(entry != 0):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.end.eq(0),
                                 self.o.payload.j.eq(col), self.o.payload.bits.eq(bits)]
                m.d.comb += [self.kept8.eq(counting & (entry != 0) & (bits == 8)),
                             self.kept4.eq(counting & ((bits == 4) | lut)), self.kept2.eq(counting & (bits == 2)),
                             self.skipped.eq(counting & (entry == 0))]
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``o`` keeps the stream rules (a ``start`` abandons a waiting beat)
    and a block beat is never a 0-bit block."""
    stream_held(m, dut.o, "o", unless=past(m, dut.start, "start"))
    block = dut.o.valid & ~dut.o.payload.end
    codes = dut.config.computed_bitwidths + ((LUT_BLOCK,) if dut.config.lut_path else ())
    m.d.comb += Assert(~block | Cat(*(dut.o.payload.bits == b for b in codes)).any(), "o: kept blocks only")


def formal_bounds(m, dut):
    """Checked by ``paro formal`` to a depth (the walk's column is not bounded in unreachable states, so
    induction does not close): a block beat names a block of the row, ``j < n_blocks`` (but in a ``start``
    cycle, which drops it); and a walk emits exactly the row's kept blocks, in increasing ``j``, each with its
    bits: for any column ``c`` and half ``h`` (free constants; the harness copies entry ``(h, c)`` from the
    writes), a walk of half ``h`` emits ``c`` if and only if its entry is non-zero, with ``bits`` 4 for an
    entry of 4, 2 for an entry of 2 in a 2-bit build, and 8 otherwise. Assumed: ``n_blocks`` is at most
    ``max_blocks`` (the descriptor check) and
    changes only with a ``start`` (it is the head's, from its descriptor), and the half being walked is not
    written until its ``end`` beat is taken (the fetcher fills the other half)."""
    cfg = dut.config
    log2_d, half_lines = cfg.head_dim.bit_length() - 1, engine_buffers(cfg)["bitmap_rows"]["entries"] // 2
    block = dut.o.valid & ~dut.o.payload.end
    m.d.comb += Assert(~block | dut.start | (dut.o.payload.j < dut.n_blocks), "o: a block of the row")
    n_blocks_before = past(m, dut.n_blocks, "n_blocks")
    m.d.comb += Assume(dut.n_blocks <= cfg.max_blocks)
    with m.If(~dut.start):
        m.d.comb += Assume(dut.n_blocks == n_blocks_before)

    col, half = free_constant(m, range(cfg.max_blocks), "col"), free_constant(m, 1, "half")
    entry, walk_half, walking, seen, taken, last_j = (Signal(8), Signal(), Signal(), Signal(), Signal(),
                                                      Signal(range(cfg.max_blocks)))
    with m.If(dut.wr_en & (dut.wr_addr == half * half_lines + (col >> log2_d))):
        m.d.sync += entry.eq(dut.wr_data.word_select(col[:log2_d], 8))
    with m.If(walking & dut.wr_en):
        m.d.comb += Assume((dut.wr_addr >= half_lines) != walk_half)
    out = dut.o.valid & dut.o.ready & walking & ~dut.start
    ours = walk_half == half
    with m.If(out & ~dut.o.payload.end):
        m.d.comb += Assert(~taken | (dut.o.payload.j > last_j), "o: blocks in increasing j")
        m.d.sync += [taken.eq(1), last_j.eq(dut.o.payload.j)]
        with m.If(ours & (dut.o.payload.j == col)):
            m.d.comb += [Assert(entry != 0, "o: a kept block"),
                         Assert(dut.o.payload.bits == block_bits(cfg, entry), "o: the block's bits")]
            m.d.sync += seen.eq(1)
    with m.If(out & dut.o.payload.end):
        m.d.sync += walking.eq(0)
        with m.If(ours & (col < dut.n_blocks)):
            m.d.comb += Assert(seen == (entry != 0), "o: every kept block of the row emitted")
    with m.If(dut.start):
        m.d.sync += [walk_half.eq(dut.row[0]), walking.eq(1), seen.eq(0), taken.eq(0)]
