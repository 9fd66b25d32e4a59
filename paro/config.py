"""One configuration object for the whole generator.

:class:`AcceleratorConfig` carries every parameter of the accelerator. It is validated once, here, with
one-line errors; the gateware (``hw/``), the golden model (``sw/golden.py``), the benches (``sim/``) and the
performance model all take the same object. It serialises to JSON, which is written into the header comment
of the emitted Verilog and into every results file.
"""

import dataclasses
import enum
import json
import operator

from .errors import ParoError

__all__ = ["AcceleratorConfig", "PEMode", "SUPPORTED_BITWIDTHS", "PACKING", "MAX_PE_STAGES", "SCORE_WIDTH",
           "SCORE_LIMIT", "min_acc_width"]


#: Attention-map block bitwidths the PE array implements. 0 means "skipped, never fetched".
SUPPORTED_BITWIDTHS = (0, 2, 4, 8)

#: A computed block's *packing*: log2 of the products a PE makes per cycle in its modes (8 bits: one, 4 bits:
#: two, 2 bits: four). The engine carries it with every tile as a 2-bit field.
PACKING = {8: 0, 4: 1, 2: 2}

#: Most pipeline registers between a PE's multipliers and its accumulators.
MAX_PE_STAGES = 2

#: Quotient bits one pipeline stage of the output stage's reciprocal divider computes (a chain of this many
#: subtract-and-compare steps between registers).
RECIP_BITS_PER_STAGE = 4

#: Largest array side the generator accepts; beyond this the emitted design (one module per PE, no
#: deduplication in Amaranth) is too large to simulate or synthesise in reasonable time.
MAX_ARRAY_SIDE = 64


#: Width of a stored score ``x`` (base-2 exponent domain, ``score_frac_bits`` fractional bits). Scores saturate
#: at ``+-SCORE_LIMIT``: 2**23 in exponent units with 8 fractional bits, a logit of 5.8 million, far past any
#: softmax (numerators vanish 16 units below the row maximum) and past FP16's range; ``-2**31``, one below the
#: lowest score, marks a segment without a real key.
SCORE_WIDTH = 32
SCORE_LIMIT = (1 << (SCORE_WIDTH - 1)) - 1


class PEMode(enum.IntEnum):
    """Compute mode of a PE for one block, chosen from the block's *output* bitwidth.

    The PE multiplies a signed 8-bit operand ``a`` by an 8-bit operand word ``b``:

    * ``INT8``: ``b`` is one signed 8-bit value; one product per cycle (blocks planned at 8 bits).
    * ``INT4``: ``b`` packs two signed 4-bit values; two products per cycle (QK^T of 4-bit blocks, K
      reduced to 4 bits).
    * ``UINT4``: ``b`` packs two unsigned 4-bit values; two products per cycle (PV of 4-bit blocks, P
      quantised to 4 bits, P >= 0).
    * ``INT2``: ``b`` packs four signed 2-bit values; four products per cycle (QK^T of 2-bit blocks, K
      reduced to 2 bits).
    * ``UINT2``: ``b`` packs four unsigned 2-bit values; four products per cycle (PV of 2-bit blocks, P
      quantised to 2 bits).

    A plain :class:`enum.IntEnum` (the numpy side needs no Amaranth); as a hardware field it is 3 bits wide.
    """
    INT8 = 0
    INT4 = 1
    UINT4 = 2
    INT2 = 3
    UINT2 = 4

    @property
    def bits(self):
        """Width of one ``b`` value in this mode."""
        return {PEMode.INT8: 8, PEMode.INT4: 4, PEMode.UINT4: 4, PEMode.INT2: 2, PEMode.UINT2: 2}[self]

    @property
    def signed(self):
        return self in (PEMode.INT8, PEMode.INT4, PEMode.INT2)

    @property
    def products_per_cycle(self):
        return 8 // self.bits

    @classmethod
    def for_block(cls, bits, use):
        """The PE mode for a block planned at ``bits`` bits, for ``use`` in ``("qk", "pv")``."""
        if use not in ("qk", "pv"):
            raise ParoError(f"use must be 'qk' or 'pv', got {use!r}")
        if bits == 8:
            return cls.INT8
        if bits == 4:
            return cls.INT4 if use == "qk" else cls.UINT4
        if bits == 2:
            return cls.INT2 if use == "qk" else cls.UINT2
        raise ParoError(f"no PE mode for a {bits}-bit block; 0-bit blocks are skipped and never reach the PE, "
                        f"computed bitwidths are 2, 4 and 8")


def _is_pow2(value):
    return value >= 1 and value & (value - 1) == 0


def min_acc_width(depth):
    """Smallest signed accumulator width that sums ``depth`` products of two signed 8-bit operands.

    The extreme product is ``-128 x -128 = 2**14``; ``depth`` of them sum to ``depth * 2**14``, which a signed
    accumulator of ``(depth * 2**14).bit_length() + 1`` bits holds. The most negative sum,
    ``depth * (-128 x 127)``, is smaller in magnitude. The 4-bit and 2-bit modes' products are at most
    ``2**10`` and so are covered too. For ``depth = 64``: ``2**20`` needs 22 bits.
    """
    return (depth * (1 << 14)).bit_length() + 1


#: The K cuts of 4-bit blocks (:attr:`AcceleratorConfig.k4_cut`).
K4_CUTS = ("round", "leading-zero")
#: The K cuts of 2-bit blocks (:attr:`AcceleratorConfig.k2_cut`).
K2_CUTS = ("block", "leading-zero")
#: Bits of each exponent beside a K value cut at its leading one (4-bit cut: 0..5, 2-bit cut: 0..7).
K_EXP_BITS = 3


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig:
    """Every parameter of the accelerator.

    rows, cols
        PE array size R x C; each a power of two in [2, 64].
    block_size
        Side B of an attention-map block (B x B tokens); a power of two in [8, 256] that tiles the array.
    head_dim
        Attention head dimension d; a power of two in [8, 256] that is a multiple of ``rows``.
    bitwidths
        Block bitwidths the plan may use; a subset of {0, 2, 4, 8} that contains 8. (The PE and the array
        compute every one; the attention engine runs {0, 4, 8} or {0, 2, 4, 8} and refuses other sets.)
    acc_width
        PE accumulator width in bits. ``None`` selects the smallest sufficient width
        (:func:`min_acc_width` of the longest dot product a tile computes, ``max(head_dim, block_size)``).
    max_seq_len
        Longest sequence (tokens, padded) the softmax row sums must hold; a power of two in [64, 2**20].
    max_kept_keys
        Keys one query-block row may keep: the engine's score buffer holds ``block_size x max_kept_keys``
        scores. A multiple of ``block_size`` in ``[block_size, max_seq_len]``; ``None`` selects
        ``max_seq_len`` (every key, what a dense run needs). Every plan is checked against it before a run.
    score_frac_bits
        Fractional bits of scores in the base-2 exponent domain; even, in [4, 12]. The exponent table is
        split in two halves of ``score_frac_bits / 2`` bits each (two tables of ``2**(bits/2)`` entries).
    exp_bits
        Fractional bits of the softmax numerators ``2**(x - max)`` (1.0 = ``2**exp_bits``); in [10, 16].
    out_bits
        Width of the signed output codes; in [8, 16].
    kv_cache_blocks
        Slots of the engine's K/V block cache (each holds one key block's K and V rows); in
        ``[1, max_blocks]``; ``None`` selects ``max_blocks`` (every block of the longest sequence stays on chip).
    axi_data_bits
        Data width of the engine's AXI4 memory master; a power of two in [32, 1024]. The engine needs
        ``16 * rows <= axi_data_bits <= 8 * head_dim`` (an output beat fits a data beat, a data beat fits a
        token row).
    max_heads
        Heads one engine start may run (descriptors in the list, ``N_HEADS``); in [1, 4096]. The engine keeps
        each head's counters on chip (``max_heads x 11`` words), readable after the run.
    pe_stages
        Pipeline registers between a PE's multipliers and its accumulators, for Fmax: 0 (multiply and
        accumulate in one cycle) to 2. Each stage delays a tile's results, and so the array's drain, by one
        cycle; the array still takes a beat every cycle.
    lut_lanes
        Lanes of SimPicker's LUT-based FP x INT multiplier (:mod:`paro.hw.lut_multiplier`): INT8 operands it
        multiplies by one FP operand a cycle; a power of two in [1, 256].
    lut_mant_bits
        Mantissa bits of that FP operand below its explicit leading one (7 as in BF16, 10 as in FP16); in
        [1, 10]. The operand is a softmax numerator (at most ``2**exp_bits``) rounded to ``lut_mant_bits + 1``
        significant bits, so its exponent runs from 0 to ``lut_exp_max = exp_bits - lut_mant_bits``.
    k4_cut
        How a 4-bit block's K operand is cut from INT8: ``"round"`` (default: the nearest multiple of 16, one
        4-bit value a key element, scores scaled by 16) or ``"leading-zero"`` (PARO's leading-zero unit: per
        element the sign and 3 bits from the leading one, a 3-bit exponent beside them, each INT4 product
        shifted by its exponent in the PE; scores unscaled). Same tiles and cycles; the leading-zero cut's
        4-bit blocks are more accurate, for a PE with two product shifters and the exponents in the array's
        ``b`` path.
    k2_cut
        How a 2-bit block's K operand is cut from INT8: ``"block"`` (default: at the leading one of the key
        block's largest value, which the quantiser puts at bit 6 for every block: the nearest multiple of 64,
        in units of 64, scores scaled by 64) or ``"leading-zero"`` (per element: the sign and its leading one,
        rounded, i.e. the nearest power of two, with a 3-bit exponent beside it; each INT2 product shifted
        by its exponent in the PE; scores unscaled). Needs 2-bit blocks. Same tiles and cycles; the per-element
        cut's 2-bit blocks are far more accurate, for a PE with four product shifters (two of them shared
        with the 4-bit cut) and four exponents in the array's ``b`` path.
    spec_lanes
        Multipliers of the engine's SimPicker speculation path (:mod:`paro.hw.spec_control`: pooled Q x pooled
        K products, ``head_dim / spec_lanes`` cycles a key block); 0 builds the engine without it (a descriptor
        that asks for speculation is then refused). A power of two in [1, head_dim], or 0.
    lut_path
        Build SimPicker's LUT path into the engine (:mod:`paro.hw.lut_path`: a speculation's unimportant blocks'
        PV through the LUT multiplier, ``lut_lanes`` products a cycle); needs ``spec_lanes`` and ``rows <=
        lut_lanes <= head_dim``. Off by default (a descriptor that asks for it is then refused).
    """
    rows: int = 4
    cols: int = 4
    block_size: int = 64
    head_dim: int = 64
    bitwidths: tuple = (0, 4, 8)
    acc_width: int = None
    max_seq_len: int = 32768
    max_kept_keys: int = None
    kv_cache_blocks: int = None
    score_frac_bits: int = 8
    exp_bits: int = 15
    out_bits: int = 16
    axi_data_bits: int = 128
    max_heads: int = 64
    pe_stages: int = 0
    lut_lanes: int = 16
    lut_mant_bits: int = 7
    spec_lanes: int = 0
    lut_path: bool = False
    k4_cut: str = "round"
    k2_cut: str = "block"

    def __post_init__(self):
        def check_int(name, value):
            try:
                return operator.index(value)
            except TypeError:
                raise ParoError(f"{name} must be an integer, got {value!r}") from None

        for name, low, high in (("rows", 2, MAX_ARRAY_SIDE), ("cols", 2, MAX_ARRAY_SIDE),
                                ("block_size", 8, 256), ("head_dim", 8, 256), ("max_seq_len", 64, 1 << 20),
                                ("axi_data_bits", 32, 1024)):
            value = check_int(name, getattr(self, name))
            if not (_is_pow2(value) and low <= value <= high):
                raise ParoError(f"{name} must be a power of two in [{low}, {high}], got {value}")
            object.__setattr__(self, name, value)
        value = check_int("lut_lanes", self.lut_lanes)
        if not (_is_pow2(value) and 1 <= value <= 256):
            raise ParoError(f"lut_lanes must be a power of two in [1, 256], got {value}")
        object.__setattr__(self, "lut_lanes", value)
        value = check_int("spec_lanes", self.spec_lanes)
        if value and not (_is_pow2(value) and value <= self.head_dim):
            raise ParoError(f"spec_lanes must be 0 (no speculation) or a power of two in [1, head_dim "
                            f"{self.head_dim}], got {value}")
        object.__setattr__(self, "spec_lanes", value)
        if not isinstance(self.lut_path, bool):
            raise ParoError(f"lut_path must be true or false, got {self.lut_path!r}")
        if self.lut_path and not self.spec_lanes:
            raise ParoError("lut_path needs speculation to choose its blocks: build with spec_lanes > 0 "
                            "(--spec-lanes N)")
        if self.lut_path and not self.rows <= self.lut_lanes <= self.head_dim:
            raise ParoError(f"lut_path needs rows {self.rows} <= lut_lanes <= head_dim {self.head_dim} (a lane "
                            f"chunk is whole accumulator words), got lut_lanes {self.lut_lanes}")
        if self.lut_path and self.block_size * self.cols * self.head_dim // self.lut_lanes < (
                self.cols * self.head_dim // self.rows + 3):
            raise ParoError(f"lut_path: a query group's keys (block_size x cols x head_dim / lut_lanes cycles) must "
                            f"outlast its drain to the accumulator (cols x head_dim / rows + 3 cycles); lower "
                            f"lut_lanes below {self.lut_lanes}")
        for name, low, high in (("score_frac_bits", 4, 12), ("exp_bits", 10, 16), ("out_bits", 8, 16),
                                ("lut_mant_bits", 1, 10)):
            value = check_int(name, getattr(self, name))
            if not low <= value <= high:
                raise ParoError(f"{name} must be in [{low}, {high}], got {value}")
            object.__setattr__(self, name, value)
        if self.score_frac_bits % 2:
            raise ParoError(f"score_frac_bits must be even (the exponent table splits it in halves), "
                            f"got {self.score_frac_bits}")
        if self.score_frac_bits > self.exp_bits:
            # finer score steps than numerator LSBs: table rounding makes 2**-t non-monotone (found by
            # tests/test_golden_properties.py at exp_bits 10 and 11 with score_frac_bits 12)
            raise ParoError(f"score_frac_bits {self.score_frac_bits} must be <= exp_bits {self.exp_bits} (else "
                            f"the exponent unit is not monotone); lower score_frac_bits or raise exp_bits")

        try:
            bitwidths = tuple(sorted(set(operator.index(b) for b in self.bitwidths)))
        except TypeError:
            raise ParoError(f"bitwidths must be integers, got {self.bitwidths!r}") from None
        for bits in bitwidths:
            if bits not in SUPPORTED_BITWIDTHS:
                raise ParoError(f"bitwidths must be a subset of {{0, 2, 4, 8}}, got {bits} in {list(bitwidths)}")
        if 8 not in bitwidths:
            raise ParoError(f"bitwidths must contain 8 (the dense mode), got {list(bitwidths)}")
        object.__setattr__(self, "bitwidths", bitwidths)

        if self.head_dim % self.rows:
            raise ParoError(f"head_dim {self.head_dim} must be a multiple of rows {self.rows} "
                            f"(PV tiles put head_dim on the array rows); use rows <= {self.head_dim}")
        key_tile = self.cols * self.max_products_per_cycle
        if self.block_size % self.rows or self.block_size % key_tile:
            raise ParoError(f"block_size {self.block_size} does not tile the array: it must be a multiple of "
                            f"rows ({self.rows}) and of cols x products per cycle ({key_tile})")

        if self.max_kept_keys is None:
            object.__setattr__(self, "max_kept_keys", self.max_seq_len)
        else:
            keys = check_int("max_kept_keys", self.max_kept_keys)
            if keys % self.block_size or not self.block_size <= keys <= self.max_seq_len:
                raise ParoError(f"max_kept_keys must be a multiple of block_size {self.block_size} in "
                                f"[{self.block_size}, max_seq_len {self.max_seq_len}], got {keys}")
            object.__setattr__(self, "max_kept_keys", keys)

        if self.kv_cache_blocks is None:
            object.__setattr__(self, "kv_cache_blocks", self.max_blocks)
        else:
            slots = check_int("kv_cache_blocks", self.kv_cache_blocks)
            if not 1 <= slots <= self.max_blocks:
                raise ParoError(f"kv_cache_blocks must be in [1, max_blocks {self.max_blocks}], got {slots}")
            object.__setattr__(self, "kv_cache_blocks", slots)

        heads = check_int("max_heads", self.max_heads)
        if not 1 <= heads <= 4096:
            raise ParoError(f"max_heads must be in [1, 4096], got {heads}")
        object.__setattr__(self, "max_heads", heads)
        if self.k4_cut not in K4_CUTS:
            raise ParoError(f"k4_cut must be one of {', '.join(K4_CUTS)}, got {self.k4_cut!r}")
        if self.k2_cut not in K2_CUTS:
            raise ParoError(f"k2_cut must be one of {', '.join(K2_CUTS)}, got {self.k2_cut!r}")
        for bits, name, default in ((4, "k4_cut", "round"), (2, "k2_cut", "block")):
            if getattr(self, name) != default and bits not in self.bitwidths:
                raise ParoError(f"{name} {getattr(self, name)!r} cuts the K of {bits}-bit blocks, and bitwidths "
                                f"{list(self.bitwidths)} have none; add {bits} to bitwidths or leave {name} at "
                                f"{default!r}")
        stages = check_int("pe_stages", self.pe_stages)
        if not 0 <= stages <= MAX_PE_STAGES:
            raise ParoError(f"pe_stages must be in [0, {MAX_PE_STAGES}], got {stages}")
        object.__setattr__(self, "pe_stages", stages)

        needed = min_acc_width(self.depth)
        if self.acc_width is None:
            object.__setattr__(self, "acc_width", needed)
        else:
            width = check_int("acc_width", self.acc_width)
            if not needed <= width <= 64:
                raise ParoError(f"acc_width must be in [{needed}, 64] for dot products of length {self.depth} "
                                f"(worst case {self.depth} x (-128 x -128) = {self.depth << 14}), got {width}")
            object.__setattr__(self, "acc_width", width)

    @property
    def depth(self):
        """Longest dot product one tile accumulates: head_dim for QK^T, block_size for PV."""
        return max(self.head_dim, self.block_size)

    @property
    def row_sum_width(self):
        """Unsigned width of a softmax row sum: up to ``max_seq_len`` numerators of at most ``2**exp_bits``."""
        return self.exp_bits + 1 + (self.max_seq_len.bit_length() - 1)

    @property
    def recip_bits(self):
        """The reciprocal of a row sum is ``floor(2**recip_bits / sum)``, at least ``2**exp_bits``."""
        return self.row_sum_width + self.exp_bits

    @property
    def recip_quotient_bits(self):
        """Bits of a reciprocal: a row sum is at least ``2**exp_bits`` (the row maximum's numerator; a smaller
        one counts as ``2**exp_bits``), so ``floor(2**recip_bits / sum) <= 2**row_sum_width``."""
        return self.recip_bits - self.exp_bits + 1

    @property
    def recip_stages(self):
        """Pipeline stages of the output stage's reciprocal divider: ``RECIP_BITS_PER_STAGE`` quotient bits a
        stage, ``recip_quotient_bits`` in all; each delays the output stage by one cycle."""
        return -(-self.recip_quotient_bits // RECIP_BITS_PER_STAGE)

    @property
    def max_blocks(self):
        """Blocks per side of the attention map of the longest sequence: ``max_seq_len / block_size``."""
        return self.max_seq_len // self.block_size

    @property
    def max_kept_blocks(self):
        """Key blocks one query-block row may keep: ``max_kept_keys / block_size``."""
        return self.max_kept_keys // self.block_size

    @property
    def acc_out_width(self):
        """Signed width of the output accumulator: up to ``max_blocks`` terms of ``acc_width + 15`` bits
        (a PV sum times a 15-bit V multiplier), plus a sign bit."""
        return self.acc_width + 15 + max(1, (self.max_blocks - 1).bit_length()) + 1

    @property
    def output_pre_shift(self):
        """Bits the output stage drops from the accumulator before the reciprocal multiply (bounds the product
        at ``33 + recip_quotient_bits`` bits: 61 for ``small``): ``max(0, acc_out_width - 32)``."""
        return max(0, self.acc_out_width - 32)

    @property
    def lut_exp_max(self):
        """Largest exponent of the LUT multiplier's FP operand: a numerator of at most ``2**exp_bits`` with
        ``lut_mant_bits + 1`` significant bits is ``mant << exp`` with ``exp <= exp_bits - lut_mant_bits``."""
        return self.exp_bits - self.lut_mant_bits

    @property
    def lut_product_width(self):
        """Signed width of a LUT product ``mant * v << exp``: ``|mant << exp| < 2**(exp_bits + 1)`` times
        ``|v| <= 128``, plus a sign bit."""
        return self.exp_bits + 9

    def derived(self):
        """Every derived size, for the params JSON and the results files."""
        return {"depth": self.depth, "max_blocks": self.max_blocks, "max_kept_blocks": self.max_kept_blocks,
                "acc_out_width": self.acc_out_width,
                "output_pre_shift": self.output_pre_shift, "row_sum_width": self.row_sum_width,
                "recip_bits": self.recip_bits, "recip_stages": self.recip_stages, "score_width": SCORE_WIDTH,
                "max_products_per_cycle": self.max_products_per_cycle, "modes": [m.name for m in self.modes],
                "lut_exp_max": self.lut_exp_max, "lut_product_width": self.lut_product_width}

    @property
    def max_products_per_cycle(self):
        return max(mode.products_per_cycle for mode in self.modes)

    @property
    def engine_lanes(self):
        """Keys (QK^T) or queries (PV) one array beat of the engine carries at most: ``cols x
        pe_accumulators`` (the K reduction, P lanes, score-buffer read ports and segment shifts are this
        wide: ``2 x cols``, or ``4 x cols`` with 2-bit blocks; the engine always has 4-bit blocks)."""
        return self.cols * self.pe_accumulators

    @property
    def pe_accumulators(self):
        """Accumulators (and result registers) of one PE: the most products a cycle of its modes (4 with 2-bit
        blocks, 2 with 4-bit blocks, 1 for an INT8-only PE)."""
        return self.max_products_per_cycle

    @property
    def k_cuts(self):
        """How each reduced bitwidth's K is cut: ``{4: k4_cut, 2: k2_cut}`` (what :mod:`sw.golden` takes)."""
        return {4: self.k4_cut, 2: self.k2_cut}

    def leading_zero(self, bits):
        """Whether the K of ``bits``-bit blocks is cut per element at its leading one (``k4_cut`` / ``k2_cut``)."""
        return self.k_cuts.get(bits) == "leading-zero"

    @property
    def k_exponents(self):
        """Exponents per PE column beside ``b`` (each ``K_EXP_BITS`` bits): 4 (one per crumb) with the 2-bit
        leading-zero cut, else 2 (one per nibble) with the 4-bit one, else 0 (no exponent path)."""
        if self.leading_zero(2):
            return 4
        return 2 if self.leading_zero(4) else 0

    @property
    def computed_bitwidths(self):
        """The bitwidths the array computes (every one but 0, ascending)."""
        return tuple(bits for bits in self.bitwidths if bits)

    @property
    def modes(self):
        """PE modes the built array supports."""
        modes = [PEMode.INT8]
        if 4 in self.bitwidths:
            modes += [PEMode.INT4, PEMode.UINT4]
        if 2 in self.bitwidths:
            modes += [PEMode.INT2, PEMode.UINT2]
        return tuple(modes)

    def to_dict(self):
        return {field.name: (list(value) if isinstance(value := getattr(self, field.name), tuple) else value)
                for field in dataclasses.fields(self)}

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParoError(f"unknown configuration field {unknown[0]!r}; known fields: {', '.join(sorted(known))}")
        values = dict(values)
        if "bitwidths" in values:
            # a non-list (None, a number) raised TypeError here: found by tests/test_fuzz.py
            if not isinstance(values["bitwidths"], (list, tuple)):
                raise ParoError(f"bitwidths must be a list of integers, got {values['bitwidths']!r}")
            values["bitwidths"] = tuple(values["bitwidths"])
        return cls(**values)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))
