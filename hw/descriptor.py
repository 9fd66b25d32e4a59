"""Descriptor unit: holds the descriptor of the head being checked or run, and checks it.

Golden twin: :func:`paro.sw.golden.descriptor_check` (the error code; the rules and their order are
:func:`paro.sw.contract.descriptor_problem`'s, the list-level rule :func:`paro.sw.contract.list_problem`'s).

Writes: the fetcher writes the descriptor's lines (``we``, ``addr`` = line index, ``data`` = the line, word
``n`` of the descriptor at bytes ``4n..4n+3`` of the descriptor, little-endian); each write takes effect at
the clock edge. Every field is kept as the whole 32-bit word it came in, so a value too wide for the
datapath is refused, never truncated into a legal one. Outputs: each field (addresses 32 bits, the others at
their contract width, valid once the descriptor passed its checks), ``bitmap_lines`` (lines of one bitmap
row, ``ceil(N_BLOCKS / head_dim)``) and ``table_lines`` (lines of the block table).

Checks: ``list_error`` (combinational, from ``desc_addr`` and ``n_heads`` alone) is high when the list
itself is illegal (code 1). ``error`` is the code of the first rule the held descriptor breaks (0: none),
valid from the :data:`CHECK_LATENCY`-th cycle after the last line write: the first stage registers the range
checks, the speculation fields' check (code 10) and every region's end address, the second the overflow and
overlap checks and the priority encoding.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib.wiring import In, Out

from paro.sw.contract import (ADDRESS_FIELDS, AXI_ADDRESS_BITS, DATA_BITS, DESCRIPTOR, ERRORS, MIN_SCORE_SHIFT,
                              REGION_ALIGN, SPEC_FRAC_BITS, SPEC_LOW_BITS, SPEC_LUT_PATH, TABLE_RECORD_BYTES, descriptor_lines,
                              descriptor_stride)

from .component import EngineBlock

__all__ = ["DescriptorUnit", "CHECK_LATENCY"]

#: Cycles from the last line write to a valid ``error``.
CHECK_LATENCY = 3
ERROR_BITS = max(ERRORS).bit_length()


def _log2(value):
    return value.bit_length() - 1


class DescriptorUnit(EngineBlock):
    def __init__(self, config):
        lines = descriptor_lines(config)
        super().__init__(config, {
            "we": In(1), "addr": In(range(max(lines, 2))), "data": In(8 * config.head_dim),
            "desc_addr": In(DATA_BITS), "n_heads": In(DATA_BITS),
            **{f.name.lower(): Out(f.width(config)) for f in DESCRIPTOR},
            "bitmap_lines": Out(range(config.max_blocks // config.head_dim + 2)),
            "table_lines": Out(range(TABLE_RECORD_BYTES * config.max_blocks // config.head_dim + 2)),
            "list_error": Out(1), "error": Out(ERROR_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B, d = cfg.block_size, cfg.head_dim
        per_line = d // 4                               # descriptor words per line
        word = {f.name: Signal(DATA_BITS, name=f"word_{f.name.lower()}") for f in DESCRIPTOR}
        with m.If(self.we):
            for f in DESCRIPTOR:
                with m.If(self.addr == f.word // per_line):
                    m.d.sync += word[f.name].eq(self.data.word_select(f.word % per_line, DATA_BITS))
        m.d.comb += [getattr(self, f.name.lower()).eq(word[f.name]) for f in DESCRIPTOR]

        # Region sizes from N_BLOCKS cut to the datapath's width (only used once N_BLOCKS is in range).
        blocks = word["N_BLOCKS"][:cfg.max_blocks.bit_length()]
        m.d.comb += [self.bitmap_lines.eq((blocks + d - 1) >> _log2(d)),
                     self.table_lines.eq((blocks * TABLE_RECORD_BYTES + d - 1) >> _log2(d))]
        size = {name: blocks << _log2(B * d) for name in ("Q_ADDR", "K_ADDR", "V_ADDR")}
        size["O_ADDR"] = blocks << _log2(2 * B * d)
        size["BITMAP_ADDR"] = (blocks * self.bitmap_lines) << _log2(d)
        size["TABLE_ADDR"] = self.table_lines << _log2(d)
        stride = descriptor_stride(cfg)
        list_end = self.desc_addr + (self.n_heads << _log2(stride))
        m.d.comb += self.list_error.eq((self.n_heads == 0) | (self.n_heads > cfg.max_heads)
                                       | (self.desc_addr[:_log2(REGION_ALIGN)] != 0)
                                       | (list_end > (1 << AXI_ADDRESS_BITS)))

        # Stage 1: range checks, region ends.
        end_bits = AXI_ADDRESS_BITS + 2
        end = {name: Signal(end_bits, name=f"end_{name.lower()}") for name in ADDRESS_FIELDS}
        list_high = Signal(end_bits + DATA_BITS)
        stage1 = Signal(ERROR_BITS)                     # the first of codes 2..7 broken (0: none)
        tokens, first, count = word["N_TOKENS"], word["ROW_FIRST"], word["ROW_COUNT"]
        shift, final = word["SCORE_SHIFT"], word["FINAL_SHIFT"]
        checks = [
            (2, (word["N_BLOCKS"] == 0) | (word["N_BLOCKS"] > cfg.max_blocks)),
            (3, (tokens <= (word["N_BLOCKS"] - 1) * B) | (tokens > word["N_BLOCKS"] * B)),
            (4, (count == 0) | (first + count > word["N_BLOCKS"])),
            (5, (shift < MIN_SCORE_SHIFT) | (shift > 63)),
            (6, (final == 0) | (final > 127)),
            (7, Cat(*(word[name][:_log2(REGION_ALIGN)] for name in ADDRESS_FIELDS)).any()),
        ]
        code1 = Const(0, ERROR_BITS)
        for code, broken in reversed(checks):                    # the lowest broken code wins
            code1 = Mux(broken, code, code1)
        spec, important, negligible = word["SPEC"], word["SPEC_IMPORTANT"], word["SPEC_NEGLIGIBLE"]
        if cfg.spec_lanes:
            bad_spec = ((spec > (SPEC_LUT_PATH if cfg.lut_path else SPEC_LOW_BITS))
                        | ((spec != 0) & ((negligible >= important) | (important > 1 << SPEC_FRAC_BITS)))
                        | ((spec == 0) & ((important != 0) | (negligible != 0))))
        else:                                                    # a build without speculation
            bad_spec = (spec != 0) | (important != 0) | (negligible != 0)
        spec_error = Signal()                                    # code 10, checked last
        m.d.sync += [stage1.eq(code1), list_high.eq(list_end), spec_error.eq(bad_spec)]
        m.d.sync += [end[name].eq(word[name] + size[name]) for name in ADDRESS_FIELDS]

        # Stage 2: overflow past the address space, output overlapping an input or the list.
        out_low, out_high = word["O_ADDR"], end["O_ADDR"]
        overlaps = [(word[name] < out_high) & (out_low < end[name]) for name in ADDRESS_FIELDS if name != "O_ADDR"]
        overlaps.append((self.desc_addr < out_high) & (out_low < list_high))
        past_space = Cat(*(end[name] > (1 << AXI_ADDRESS_BITS) for name in ADDRESS_FIELDS)).any()
        m.d.sync += self.error.eq(Mux(stage1 != 0, stage1, Mux(past_space, 8, Mux(Cat(*overlaps).any(), 9,
                                                                                  Mux(spec_error, 10, 0)))))
        return m
