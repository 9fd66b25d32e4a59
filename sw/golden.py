"""Bit-exact integer model of the accelerator: the specification of every integer the hardware produces.

Each hardware block ``hw/X.py`` has its twin here under the same name, and the benches in ``sim/`` compare
the emitted Verilog to these functions bit for bit. Everything is plain numpy on ``int64`` arrays; widths
come from :class:`paro.config.AcceleratorConfig`.

Operand word of the PE (``b``, 8 bits), shared by the hardware layout ``hw.pe.OperandB``::

    INT8   b[7:0] = one signed value
    INT4   b[3:0] = signed value 0, b[7:4] = signed value 1
    UINT4  b[3:0] = unsigned value 0, b[7:4] = unsigned value 1
    INT2   b[2k+1:2k] = signed value k, k = 0..3
    UINT2  b[2k+1:2k] = unsigned value k, k = 0..3

In the 4-bit and 2-bit modes value k goes to accumulator k.
"""

import numpy as np

from paro.config import PACKING, SCORE_LIMIT, SCORE_WIDTH, PEMode
from paro.errors import ParoError

from .contract import (BURST_BOUNDARY, CONTROL_REGISTERS, DATA_BITS, MAX_BURST_BEATS, OUTPUT_CODE_BYTES, REGISTERS,
                       LUT_BLOCK, RESP_OKAY, RESP_SLVERR, SPEC_FRAC_BITS, SPEC_LOW_BITS, SPEC_LUT_PATH, SPEC_OFF,
                       SPEC_SKIP_ONLY, TABLE_FIELDS,
                       TABLE_RECORD_BYTES, bitmap_stride, descriptor_lines, descriptor_problem, descriptor_stride,
                       list_problem, low_bit_blocks, region_bytes)

__all__ = [
    "wrap", "operand_range", "check_operand", "pack_operand_b", "unpack_operand_b",
    "pe_products", "pe_step", "array_tile", "array_drain_beats", "reduce_int8_to_int4",
    "round_shift", "int_multipliers", "score_multipliers", "qk_block", "scores_log2", "softmax_row_max",
    "exp_tables", "exp2_numerators", "softmax_row_sum", "p_shift", "p_quantize", "pv_block",
    "p_round", "output_accumulate", "value_multipliers", "output_format", "output_final_shift",
    "reciprocal", "output_codes", "attention_block_row", "attention_head", "k_reduce_shift",
    "reduce_int8_lz", "K_LZ_MANTISSA_BITS", "lz_max_exponent",
    "axi_lite_slave", "register_file", "engine_controller", "k_reduction", "p_lanes", "segment_shift", "score_unit",
    "tile_queue", "output_accumulator", "output_stage", "operand_feed",
    "axi_bursts", "memory_reader", "kv_cache", "fetcher", "memory_writer", "descriptor_check", "block_table",
    "layer_sequencer", "layer_reads", "bit_length", "LUT_ENTRIES", "lut_fp", "lut_table", "lut_multiplier",
    "LUT_BLOCK", "spec_control", "low_bit_blocks", "SPEC_OFF", "SPEC_SKIP_ONLY", "SPEC_LOW_BITS", "SPEC_LUT_PATH",
    "SPEC_SKIP",
    "SPEC_LUT", "SPEC_FULL", "SPEC_FRAC_BITS", "REUSE_FRAC_BITS", "LUT_QK_BITS",
    "pooled_codes", "speculation_scores", "speculation_masses", "speculation_classes", "reuse_check",
    "reuse_anchors", "lut_path", "lut_block_accumulate", "row_packer", "row_buffer", "score_buffer",
]


def wrap(value, width):
    """Two's complement wrap of ``value`` to a signed ``width``-bit integer (what a register of that width holds)."""
    value = np.asarray(value, dtype=np.int64)
    half = np.int64(1) << (width - 1)
    return ((value + half) & ((np.int64(1) << width) - 1)) - half


def operand_range(mode):
    """Inclusive ``(low, high)`` range of one ``b`` value in ``mode``."""
    mode = PEMode(mode)
    return (-(1 << (mode.bits - 1)), (1 << (mode.bits - 1)) - 1) if mode.signed else (0, (1 << mode.bits) - 1)


def check_operand(values, mode, name="b"):
    low, high = operand_range(mode)
    values = np.asarray(values)
    if values.size and (values.min() < low or values.max() > high):
        raise ParoError(f"{name} values must be in [{low}, {high}] for PE mode {PEMode(mode).name}, "
                        f"got [{values.min()}, {values.max()}]")


def pack_operand_b(values, mode):
    """Pack ``b`` values into 8-bit operand words along the last axis.

    INT8: one value a word (shape unchanged). 4-bit modes: values ``2n`` and ``2n+1`` share word ``n``;
    2-bit modes: values ``4n .. 4n+3`` share word ``n`` (the last axis shrinks by the values per word, so
    it must be a multiple of it). Value k of a word sits at bits ``[bits*k + bits-1 : bits*k]``.
    """
    mode = PEMode(mode)
    values = np.asarray(values, dtype=np.int64)
    check_operand(values, mode)
    per, bits = mode.products_per_cycle, mode.bits
    if per == 1:
        return values & 0xFF
    if values.shape[-1] % per:
        raise ParoError(f"{bits}-bit operands pack {per} to a word; got a count {values.shape[-1]} that is not a "
                        f"multiple of {per}")
    mask = (1 << bits) - 1
    return sum((values[..., k::per] & mask) << (bits * k) for k in range(per))


def unpack_operand_b(words, mode):
    """Inverse of :func:`pack_operand_b`."""
    mode = PEMode(mode)
    words = np.asarray(words, dtype=np.int64) & 0xFF
    per, bits = mode.products_per_cycle, mode.bits
    out = np.empty(words.shape[:-1] + (per * words.shape[-1],), dtype=np.int64)
    for k in range(per):
        value = (words >> (bits * k)) & ((1 << bits) - 1)
        if mode.signed:
            value = np.where(value >= 1 << (bits - 1), value - (1 << bits), value)
        out[..., k::per] = value
    return out


def pe_products(a, b_word, mode, b_exp=(0, 0, 0, 0)):
    """The PE's four products for signed 8-bit ``a`` and operand word ``b_word``: ``(p0, p1, p2, p3)``.

    Mirrors ``hw.pe``'s crumb datapath (the nibble datapath of a PE without 2-bit modes gives the same
    ``p0``, ``p1``): four signed 8 x 3 sub-multipliers, one per 2-bit slice ``c_k = b[2k+1:2k]``, sign-extended
    where the slice is the top of a signed value (``c3`` in INT8, ``c1`` and ``c3`` in INT4, all in INT2),
    zero-extended otherwise. Nibble products ``n0 = (pc1 << 2) + pc0``, ``n1 = (pc3 << 2) + pc2``. INT8:
    ``p0 = (n1 << 4) + n0`` (the full 8 x 8 product), the rest 0; 4-bit modes: ``(n0, n1, 0, 0)``; 2-bit
    modes: ``(pc0, pc1, pc2, pc3)``. With the leading-zero cuts, INT4 products are shifted left by their
    nibble's exponent ``b_exp[k]`` (0..5, ``k4_cut``) and INT2 products by their crumb's (0..7, ``k2_cut``);
    the operand feed gives 0 for a mode whose K the build does not cut so (whose PE has no shifter).
    """
    mode = PEMode(mode)
    b_exp = tuple(b_exp) + (0,) * (4 - len(b_exp))          # a build's exponents: 0, 2 or 4 of them
    a = np.asarray(a, dtype=np.int64)
    b_word = np.asarray(b_word, dtype=np.int64) & 0xFF
    top_signed = {PEMode.INT8: (3,), PEMode.INT4: (1, 3), PEMode.UINT4: (), PEMode.INT2: (0, 1, 2, 3),
                  PEMode.UINT2: ()}[mode]
    pc = []
    for k in range(4):
        crumb = (b_word >> (2 * k)) & 3
        if k in top_signed:
            crumb = np.where(crumb >= 2, crumb - 4, crumb)
        pc.append(a * crumb)
    n0, n1 = (pc[1] << 2) + pc[0], (pc[3] << 2) + pc[2]
    zero = np.zeros_like(pc[0])
    if mode is PEMode.INT8:
        return (n1 << 4) + n0, zero, zero, zero
    if mode is PEMode.INT4:
        return n0 << np.asarray(b_exp[0], dtype=np.int64), n1 << np.asarray(b_exp[1], dtype=np.int64), zero, zero
    if mode.bits == 4:
        return n0, n1, zero, zero
    if mode is PEMode.INT2:
        return tuple(pc[k] << np.asarray(b_exp[k], dtype=np.int64) for k in range(4))
    return tuple(pc)


def pe_step(acc, a, b_word, mode, fresh, acc_width, b_exp=(0, 0, 0, 0)):
    """One valid PE cycle: ``acc[k] = wrap((0 if fresh else acc[k]) + p[k])`` for every accumulator.

    ``acc`` holds the PE's accumulators (2, or 4 with 2-bit modes); ``fresh`` is true on the first beat of a
    tile; ``b_exp``: the INT4 nibbles' or INT2 crumbs' exponents of the leading-zero cuts. Returns the new
    tuple.
    """
    mode = PEMode(mode)
    if mode.products_per_cycle > len(acc):
        raise ParoError(f"PE mode {mode.name} needs {mode.products_per_cycle} accumulators, the PE has {len(acc)}")
    products = pe_products(a, b_word, mode, b_exp)
    base = (0,) * len(acc) if fresh else acc
    return tuple(int(wrap(base[k] + products[k], acc_width)) for k in range(len(acc)))


def array_tile(a, b, mode, acc_width):
    """One array tile: ``C = A @ B.T`` with every accumulator wrapped to ``acc_width`` bits.

    ``a``: signed 8-bit, shape (R, K). ``b``: values in ``mode``'s range, shape (N, K) with N = C x products
    per cycle (rows ``n*j .. n*j+n-1`` share PE column ``j``: C in INT8, 2C in the 4-bit and 4C in the 2-bit
    modes). Returns int64 (R, N).
    Wrapping is applied once at the end, which equals wrapping after every addition (two's complement sums
    are associative modulo 2**acc_width).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    check_operand(a, PEMode.INT8, "a")
    check_operand(b, mode)
    return wrap(a @ b.T, acc_width)


def array_drain_beats(c_tile):
    """Order in which the array drains a tile: beat ``n`` carries column ``n`` of C (all R rows)."""
    return [np.asarray(c_tile)[:, n] for n in range(np.asarray(c_tile).shape[1])]


#: The K reduction's cut per computed bitwidth: a ``b``-bit block's K operand keeps bits ``[7 : shift]`` of the
#: INT8 value, rounded (:func:`reduce_k`); its scores are scaled by ``2**shift`` to undo the unit.
K_REDUCE_SHIFT = {8: 0, 4: 4, 2: 6}


def _leading_zero(bits, cuts):
    """Whether ``cuts`` (:attr:`paro.config.AcceleratorConfig.k_cuts`, ``None``: the default cuts) cuts the K
    of ``bits``-bit blocks per element at its leading one."""
    return bool(cuts) and cuts.get(bits) == "leading-zero"


def k_reduce_shift(bits, cuts=None):
    """The score factor's shift of a ``bits``-bit block (``K_REDUCE_SHIFT``), 0 for blocks whose K is cut at
    the leading zero (``cuts``: :attr:`~paro.config.AcceleratorConfig.k_cuts`; their K operand is in INT8
    units already)."""
    return 0 if _leading_zero(bits, cuts) else K_REDUCE_SHIFT[bits]


def reduce_k(values, bits, cuts=None):
    """K reduced to a ``bits``-bit block's operand: the INT8 value itself, :func:`reduce_int8_to_int4` or
    :func:`reduce_int8_to_int2`, or, where ``cuts`` (:attr:`~paro.config.AcceleratorConfig.k_cuts`) cuts that
    bitwidth at the leading zero, the value :func:`reduce_int8_lz` stands for (``mantissa << exponent``)."""
    if bits == 8:
        values = np.asarray(values, dtype=np.int64)
        check_operand(values, PEMode.INT8, "int8 operand")
        return values
    if bits in (2, 4) and _leading_zero(bits, cuts):
        mantissa, exponent = reduce_int8_lz(values, bits)
        return mantissa << exponent
    if bits == 4:
        return reduce_int8_to_int4(values)
    if bits == 2:
        return reduce_int8_to_int2(values)
    raise ParoError(f"K is reduced for 2-, 4- and 8-bit blocks, got {bits}")


def reduce_int8_to_int4(values):
    """The 4-bit operand reduction of 4-bit blocks: ``clip((x + 8) >> 4, -8, 7)``.

    Rounds an INT8 value to the nearest multiple of 16 (ties up) and returns it in units of 16, so
    ``16 * reduce_int8_to_int4(x)`` approximates ``x`` with error at most 8 (127 saturates to 112).
    """
    values = np.asarray(values, dtype=np.int64)
    check_operand(values, PEMode.INT8, "int8 operand")
    return np.clip((values + 8) >> 4, -8, 7)


#: Magnitude bits the leading-zero cut of a ``b``-bit block's K keeps, from the leading one down (the
#: operand's bits but the sign).
K_LZ_MANTISSA_BITS = {4: 3, 2: 1}


def lz_max_exponent(bits):
    """The largest exponent of :func:`reduce_int8_lz` at ``bits`` bits (5 for 4-bit, 7 for 2-bit K): an INT8
    magnitude has at most 8 bits, ``M`` of which the mantissa keeps (a rounding carry ends at 128)."""
    return 8 - K_LZ_MANTISSA_BITS[bits]


def reduce_int8_lz(values, bits):
    """The leading-zero cut of ``bits``-bit blocks' K (``k4_cut`` / ``k2_cut = "leading-zero"``), per
    element: ``(m, e)``, the signed ``bits``-bit mantissa ``m`` and the exponent ``e``, ``m << e`` the value.

    ``|x|`` keeps ``M = K_LZ_MANTISSA_BITS[bits]`` bits from its leading one down, rounded to nearest (ties
    up): ``e = max(0, bit_length(|x|) - M)``, ``|m| = (|x| + 2**(e-1)) >> e``; a rounding that carries to
    ``2**M`` becomes ``2**(M-1)`` at ``e + 1`` (127 -> 128). Error at most ``2**(e-1)``. 4 bits: ``m`` in
    [-7, 7], ``e`` in [0, 5], exact below 8, relative error at most 1/8 above. 2 bits: ``m`` in {-1, 0, 1},
    ``e`` in [0, 7]: ``x`` to the nearest power of two (rounded linearly: 3 -> 4, 5 -> 4, 6 -> 8), relative
    error at most 1/3.
    """
    values = np.asarray(values, dtype=np.int64)
    check_operand(values, PEMode.INT8, "int8 operand")
    kept = K_LZ_MANTISSA_BITS[bits]
    magnitude = np.abs(values)
    exponent = np.maximum(bit_length(magnitude) - kept, 0)
    mantissa = round_shift(magnitude, exponent)
    carry = mantissa == 1 << kept
    mantissa = np.where(carry, mantissa >> 1, mantissa)
    exponent = exponent + carry
    return np.sign(values) * mantissa, exponent


def reduce_int8_to_int2(values):
    """The 2-bit operand reduction of 2-bit blocks, the block's leading-zero cut (``k2_cut = "block"``):
    ``clip((x + 32) >> 6, -2, 1)``.

    A block of K keeps the bits from its largest magnitude's leading one down, as many as the operand holds:
    the sign and one bit. Every key block is quantised with its own scale (``max |k| / 127``), so the
    leading one of every non-zero block's largest value is bit 6 and the cut is bit 6 for all of them
    (``tests/test_golden_properties.py`` checks this on the quantiser's output): ``x`` rounded to the nearest
    multiple of 64 (ties up), in units of 64, saturated to INT2. ``64 * reduce_int8_to_int2(x)`` is one of
    -128, -64, 0, 64; error at most 32 below 96, positive values from 96 on saturate to 64.
    """
    values = np.asarray(values, dtype=np.int64)
    check_operand(values, PEMode.INT8, "int8 operand")
    return np.clip((values + 32) >> 6, -2, 1)


# ===================================================================================================
# Attention of one head (the engine: QK^T on the array, softmax unit, P quantizer, PV, output stage)
# ===================================================================================================
#
# Inputs (:class:`sw.quant.QuantizedHead`): INT8 Q, smoothed K and V, padded to whole blocks, with
# per-block scales; the head's bitmap ``uint8[nq, nk]`` (0 = skipped). Stages, per query block i:
#
#   qk_block        S = Q8_i K8_j^T (8-bit block), Q8_i K4_j^T with K4 = reduce_int8_to_int4(K8_j) (4-bit
#                   block) or Q8_i K2_j^T with K2 = reduce_int8_to_int2(K8_j) (2-bit block), or with K cut per
#                   element at its leading one (reduce_int8_lz, the config's k4_cut / k2_cut); acc_width-bit
#                   integers, as the array computes them.
#   scores_log2     x = clip(round(S * cq_i * ck_j * 2**k_reduce_shift(b) / 2**score_shift), +-SCORE_LIMIT): the
#                   score in base-2 exponent units with score_frac_bits fractional bits (cq, ck from
#                   score_multipliers).
#   softmax_row_max m = max of x over kept blocks and real (unpadded) keys.
#   exp2_numerators e = 2**(x - m) in UQ1.exp_bits via two tables of 2**(score_frac_bits/2) entries
#                   and a shift; 0 for skipped blocks and padding keys. e <= 2**exp_bits.
#   softmax_row_sum l = sum of e (row_sum_width bits).
#   p_quantize      P~ = round(e * 2**z * L_b / 2**exp_bits), L_8 = 127, L_4 = 15, L_2 = 3: the numerators relative to
#                   the row max (FlashAttention-style: normalised at the output), with a leading-zero shift z
#                   per row of each block (p_shift) so low-mass blocks keep their precision at 4 bits.
#   pv_block        U = P~_ij V8_j (the array's PV tile, INT8, UINT4 or UINT2 mode).
#   output_accumulate  A = sum_j round(U_ij * cv_{j,b} / 2**z): cv = v_scale_j / L_b * 2**ev (cv_2 = 5 cv_4).
#   reciprocal      r = floor(2**recip_bits / max(l, 2**exp_bits)), 0 for l = 0 (recip_quotient_bits bits).
#   output_codes    codes = clip(round(round(A / 2**pre_shift) * r / 2**final_shift)), out_bits signed;
#                   the dequantised output is codes * 2**-out_exp.

LOG2E = 1.4426950408889634
P_LEVELS = {8: 127, 4: 15, 2: 3}


def round_shift(value, shift):
    """``round(value / 2**shift)`` with ties toward +infinity, for integer arrays; left shift where shift < 0.

    ``shift`` is a scalar or an array broadcast against ``value`` (e.g. one shift per row).
    """
    value = np.asarray(value, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = np.maximum(shift, 0)
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    return np.where(shift > 0, (value + half) >> right, value << np.maximum(-shift, 0))


def int_multipliers(values, bits=15):
    """Integer mantissas ``m`` and one exponent ``e`` with ``values ~ m * 2**-e``, ``max(m) < 2**bits``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)) or values.min() <= 0:
        raise ParoError("scales must be finite and positive")
    exponent = bits - 1 - int(np.floor(np.log2(values.max())))
    mantissas = np.clip(np.round(values * 2.0 ** exponent), 1, (1 << bits) - 1).astype(np.int64)
    return mantissas, exponent


def score_multipliers(q_scale, k_scale, head_dim, config):
    """``(cq, ck, score_shift)``: per-block integer score multipliers and the shift of :func:`scores_log2`."""
    cq, eq = int_multipliers(np.asarray(q_scale) * LOG2E / np.sqrt(head_dim))
    ck, ek = int_multipliers(k_scale)
    return cq, ck, eq + ek - config.score_frac_bits


def _int_matmul(a, b_t):
    """Exact integer ``a @ b_t.T`` (transposing the last two axes) through float64 BLAS (exact while every sum
    stays below 2**53)."""
    return np.rint(np.asarray(a, dtype=np.float64) @ np.swapaxes(np.asarray(b_t, dtype=np.float64), -1, -2)
                   ).astype(np.int64)


def qk_block(q8_rows, k8_block, bits, acc_width, cuts=None):
    """Scores of one block as the array computes them: the block's QK^T mode with K reduced (:func:`reduce_k`)."""
    return wrap(_int_matmul(q8_rows, reduce_k(k8_block, bits, cuts)), acc_width)


def scores_log2(s, cq_i, ck_cols, bits_cols, shift, cuts=None):
    """Scores in base-2 exponent units: ``round(S * cq_i * ck_j * 2**k_reduce_shift(b_j) / 2**shift)``
    (``b_j``: each column's block bitwidth), saturated at ``+-SCORE_LIMIT`` (``SCORE_WIDTH`` bits)."""
    # k_reduce_shift indexed by bits (-1: not a computed bitwidth), for whole columns of bits at once
    table = np.array([k_reduce_shift(bits, cuts) if bits in K_REDUCE_SHIFT else -1 for bits in range(9)])
    cut = table[np.asarray(bits_cols, dtype=np.int64)]
    if cut.size and cut.min() < 0:
        raise ParoError(f"scores are computed for 2-, 4- and 8-bit blocks, got {sorted(set(np.ravel(bits_cols).tolist()))}")
    factor = np.asarray(ck_cols, dtype=np.int64) << cut
    return np.clip(round_shift(np.asarray(s, dtype=np.int64) * (cq_i * factor), shift), -SCORE_LIMIT, SCORE_LIMIT)


def softmax_row_max(x, valid_cols):
    """Row maximum of ``x`` over the kept blocks' real (unpadded) keys, shape (rows, 1)."""
    return np.max(np.where(valid_cols, x, np.iinfo(np.int64).min), axis=1, keepdims=True)


def softmax_row_sum(e):
    """Row sum of the numerators (row_sum_width bits)."""
    return np.asarray(e, dtype=np.int64).sum(axis=1)


def exp_tables(config):
    """The exponent unit's two tables: ``2**(-h / 2**half)`` and ``2**(-l / 2**frac)`` in UQ1.exp_bits."""
    half = config.score_frac_bits // 2
    one = 1 << config.exp_bits
    hi = np.round(one * 2.0 ** (-np.arange(1 << half) / (1 << half))).astype(np.int64)
    lo = np.round(one * 2.0 ** (-np.arange(1 << half) / (1 << config.score_frac_bits))).astype(np.int64)
    return hi, lo


def exp2_numerators(t, config):
    """``e = 2**-t`` for ``t >= 0`` in score fixed point: ``((HI[h] * LO[l] + half) >> exp_bits) >> n``."""
    t = np.asarray(t, dtype=np.int64)
    if t.size and t.min() < 0:
        raise ParoError("exp2_numerators needs t = max - x >= 0")
    frac, half = config.score_frac_bits, config.score_frac_bits // 2
    hi_table, lo_table = exp_tables(config)
    n = t >> frac
    h = (t >> half) & ((1 << half) - 1)
    l = t & ((1 << half) - 1)
    mantissa = (hi_table[h] * lo_table[l] + (1 << (config.exp_bits - 1))) >> config.exp_bits
    return np.where(n > config.exp_bits, 0, mantissa >> np.minimum(n, 62))


def bit_length(values):
    """Exact bit length of non-negative integers below ``2**53`` (0 for 0): the binary exponent ``frexp``
    gives, exact because such integers are exact in float64."""
    return np.frexp(np.asarray(values, dtype=np.float64))[1].astype(np.int64)


#: Largest leading-zero shift of a (row, block) segment of numerators (a 4-bit field in hardware).
P_SHIFT_MAX = 15


def p_shift(e_block, config):
    """Leading-zero shift per row of a block: ``z = clip(exp_bits - bit_length(max e), 0, 15)``.

    Scaling the segment by ``2**z`` puts its largest numerator in ``[2**(exp_bits-1), 2**exp_bits]``, so a
    low-mass block keeps its relative precision at 4 bits (block floating point over the row segment).
    """
    peak = np.asarray(e_block, dtype=np.int64).max(axis=-1)
    return np.where(peak > 0, np.clip(config.exp_bits - bit_length(peak), 0, P_SHIFT_MAX), 0)


def p_quantize(e_block, bits, config):
    """Numerators of one block at its bitwidth: ``(p, z)``, ``p = min(L_b, round(e * 2**z * L_b / 2**exp_bits))``.

    ``z`` (per row, :func:`p_shift`) is undone at the output accumulation.
    """
    z = p_shift(e_block, config)
    return p_round(e_block, bits, z[..., None], config), z


def p_round(e, bits, z, config):
    """``min(L_b, round(e * 2**z * L_b / 2**exp_bits))`` for given shifts ``z`` (broadcast against ``e``)."""
    levels = P_LEVELS[bits]
    return np.minimum(levels, round_shift(np.asarray(e, dtype=np.int64) * levels, config.exp_bits - np.asarray(z)))


def output_accumulate(acc, u, cv, z):
    """``acc + round(u * cv / 2**z)`` with the block's V multiplier ``cv`` and per-row shifts ``z``; for
    stacked blocks (``u`` (blocks, rows, d), ``cv`` and ``z`` per block) the sum of every block's term."""
    u, cv, z = np.asarray(u, dtype=np.int64), np.asarray(cv, dtype=np.int64), np.asarray(z)
    if u.ndim == 2:
        return acc + round_shift(u * cv, z[:, None])
    return acc + round_shift(u * cv[:, None, None], z[..., None]).sum(axis=0)


def pv_block(p_block, v8_block, bits, acc_width):
    """The array's PV tile for one block: ``P~ V8`` (INT8 mode for 8-bit P, UINT4 for 4-bit, UINT2 for 2-bit);
    stacked blocks (leading axis) give one tile each."""
    check_operand(p_block, PEMode.for_block(bits, "pv"), "P")
    return wrap(_int_matmul(p_block, np.swapaxes(np.asarray(v8_block), -1, -2)), acc_width)


#: A 2-bit block's V multiplier is this multiple of the 4-bit one (``L_4 / L_2``): the block table holds
#: ``CV8`` and ``CV4`` only, the engine makes ``cv_2 = 5 cv_4`` with one shift and one add.
CV2_FROM_CV4 = P_LEVELS[4] // P_LEVELS[2]


def value_multipliers(v_scale, bitwidths):
    """``(cv, ev)``: ``cv[j, b] ~ v_scale_j / L_b * 2**ev`` for every computed bitwidth b (dict by b).

    The 8- and 4-bit columns share the exponent (:func:`int_multipliers`); the 2-bit column is
    ``CV2_FROM_CV4 * cv_4`` (exactly ``v_scale / 3`` to cv_4's precision; below 2**18)."""
    bits = [b for b in (4, 8) if b in bitwidths or (b == 4 and 2 in bitwidths)]
    table = np.stack([np.asarray(v_scale, dtype=np.float64) / P_LEVELS[b] for b in bits], axis=1)
    mantissas, exponent = int_multipliers(table)
    cv = {b: mantissas[:, n] for n, b in enumerate(bits)}
    if 2 in bitwidths:
        cv[2] = CV2_FROM_CV4 * cv[4]
    return cv, exponent


def output_format(v_scale, config):
    """Output exponent ``out_exp``: codes * 2**-out_exp hold any convex combination of V (|O| <= 128 max sv)."""
    bound = 128.0 * float(np.max(v_scale))
    return int(np.floor(np.log2(((1 << (config.out_bits - 1)) - 1) / bound)))


def output_final_shift(ev, out_exp, config):
    """The output stage's last shift: from ``A * 2**-ev / (l * 2**-exp_bits)`` to codes in ``2**-out_exp``."""
    return config.recip_bits + ev - config.exp_bits - out_exp - config.output_pre_shift


def output_codes(acc, r, final_shift, config):
    """``clip(round(round(A / 2**pre) * r / 2**final_shift))`` in ``out_bits`` signed bits."""
    limit = 1 << (config.out_bits - 1)
    scaled = round_shift(acc, config.output_pre_shift) * np.asarray(r, dtype=np.int64)[:, None]
    return np.clip(round_shift(scaled, final_shift), -limit, limit - 1)


def reciprocal(row_sum, config):
    """``floor(2**recip_bits / l)`` of each row sum, 0 for 0. A row's sum is at least ``2**exp_bits`` (its
    maximum contributes 1.0); a smaller one, which no row produces, counts as ``2**exp_bits``, so a reciprocal
    has ``recip_quotient_bits`` bits."""
    row_sum = np.asarray(row_sum, dtype=np.int64)
    return np.where(row_sum > 0, (np.int64(1) << config.recip_bits) // np.maximum(row_sum, 1 << config.exp_bits), 0)


def _qk_bits(code):
    return LUT_QK_BITS if code == LUT_BLOCK else code


def attention_block_row(i, head, bitmap_row, config, trace=False):
    """Output codes (B, d) of query block ``i``; with ``trace`` also every intermediate integer (a dict).
    ``bitmap_row`` holds each key block's bitwidth (0: skipped) or ``LUT_BLOCK``.

    The kept blocks of one bitwidth go through each stage together (their QK^T tiles, P quantisation and PV
    tiles as stacked arrays): the integers are those of one block at a time, and the output accumulator's sum
    of rounded terms does not depend on the order it adds them in."""
    B = config.block_size
    rows = slice(i * B, (i + 1) * B)
    kept = [(j, int(b)) for j, b in enumerate(bitmap_row) if b]
    if not kept:
        raise ParoError(f"query block {i} keeps no key block; every query row must keep at least one")
    cq, ck, shift = head.score_multipliers(config)
    cols = np.concatenate([np.arange(j * B, (j + 1) * B) for j, _ in kept])
    blocks = np.array([j for j, _ in kept])
    qk_bits = np.array([_qk_bits(b) for _, b in kept])
    s = np.zeros((B, len(kept) * B), dtype=np.int64)
    for bits in np.unique(qk_bits):
        at = np.flatnonzero(qk_bits == bits)
        keys = head.k8.reshape(-1, B, head.k8.shape[1])[blocks[at]].reshape(-1, head.k8.shape[1])
        s.reshape(B, len(kept), B)[:, at] = qk_block(head.q8[rows], keys, int(bits), config.acc_width,
                                                     config.k_cuts).reshape(B, len(at), B)
    x = scores_log2(s, cq[i], np.repeat(ck[blocks], B), np.repeat(qk_bits, B), shift, config.k_cuts)
    valid = cols < head.n_tokens
    m = softmax_row_max(x, valid)
    e = np.where(valid, exp2_numerators(np.where(valid, m - x, 0), config), 0)
    l = softmax_row_sum(e)
    cv, ev = head.value_multipliers(config)
    d = head.v8.shape[1]
    acc = np.zeros((B, d), dtype=np.int64)
    e_blocks = e.reshape(B, len(kept), B).transpose(1, 0, 2)                 # (kept block, row, key)
    v_blocks = head.v8.reshape(-1, B, d)[blocks]                             # (kept block, key, d)
    p_all, z_all, u_all = [None] * len(kept), [None] * len(kept), [None] * len(kept)
    codes_of = np.array([b for _, b in kept])
    for bits in np.unique(codes_of):
        at = np.flatnonzero(codes_of == bits)
        if bits == LUT_BLOCK:
            for n in at:
                acc = lut_block_accumulate(acc, e_blocks[n], v_blocks[n], cv[8][blocks[n]], config)
            continue
        p, z = p_quantize(e_blocks[at], int(bits), config)
        u = pv_block(p, v_blocks[at], int(bits), config.acc_width)
        acc = output_accumulate(acc, u, cv[int(bits)][blocks[at]], z)
        for k, n in enumerate(at):
            p_all[n], z_all[n], u_all[n] = p[k], z[k], u[k]
    r = reciprocal(l, config)
    final = output_final_shift(ev, head.out_exp(config), config)
    codes = output_codes(acc, r, final, config)
    if not trace:
        return codes
    return {"kept": kept, "s": s, "x": x, "m": m[:, 0], "e": e, "l": l, "p": p_all, "z": z_all, "u": u_all,
            "acc": acc, "r": r, "codes": codes, "pre_shift": config.output_pre_shift, "final_shift": final}


def attention_head(head, bitmap, config, rows=None):
    """Output codes (padded tokens, d) of one head and its output exponent (dequantise: codes * 2**-exp).
    ``rows`` (a range of query blocks, default all) limits the work: other query blocks' codes are 0."""
    bitmap, B = np.asarray(bitmap), config.block_size
    codes = np.zeros((bitmap.shape[0] * B, config.head_dim), dtype=np.int64)
    for i in range(bitmap.shape[0]) if rows is None else rows:
        codes[i * B:(i + 1) * B] = attention_block_row(i, head, bitmap[i], config)
    return codes, head.out_exp(config)


# ===================================================================================================
# Engine blocks: the twin of each hw/<block>.py, by the block's name. The attention functions above
# compose them; these state what one block computes from its own inputs, for the blocks' unit tests.
# ===================================================================================================

def axi_lite_slave(transactions):
    """What the AXI4-Lite register slave does with each transaction, in order: ``("w", address, data, strb)``
    or ``("r", address)`` (byte addresses) -> ``{"resp", "csr"}`` where ``csr`` is the register-bus access it
    makes, ``("w", word, data)`` or ``("r", word)``, or ``None`` (a misaligned or partial access: ``SLVERR``)."""
    result = []
    for kind, address, *rest in transactions:
        legal = address % 4 == 0 and (kind == "r" or rest[1] == 0b1111)
        access = None
        if legal:
            access = ("w", address >> 2, rest[0] & ((1 << DATA_BITS) - 1)) if kind == "w" else ("r", address >> 2)
        result.append({"resp": RESP_OKAY if legal else RESP_SLVERR, "csr": access})
    return result


def register_file(writes, config):
    """The control registers after bus writes ``(address, data)`` or ``(address, data, busy)``: ``{register:
    value}``, each kept to its contract width (a later write wins; a write while busy is ignored)."""
    registers = {}
    for address, value, *busy in writes:
        if busy and busy[0]:
            continue
        for name in CONTROL_REGISTERS:
            if address == REGISTERS[name].address:
                registers[name] = value & ((1 << REGISTERS[name].width(config)) - 1)
    return registers


def descriptor_check(config, fields, desc_addr, n_heads):
    """The error code the engine gives a descriptor (0: none): the first rule of
    :func:`paro.sw.contract.descriptor_problem` it breaks."""
    return descriptor_problem(config, fields, desc_addr, n_heads)[0]


def block_table(table, block):
    """Block ``block``'s record from a head's block table bytes: ``{CQ, CK, CV8, CV4}``."""
    record = np.frombuffer(bytes(table[block * TABLE_RECORD_BYTES:(block + 1) * TABLE_RECORD_BYTES]), dtype="<u2")
    return {name: int(value) for name, value in zip(TABLE_FIELDS, record)}


def layer_sequencer(config, descriptors, desc_addr, n_heads):
    """What the engine does for a start with ``n_heads`` descriptors (``descriptors``, field dicts in list
    order) at ``desc_addr``: ``("error", 1, 0)`` at once if the list is illegal; else ``("check", h)`` (read
    and check descriptor ``h``) for each head until ``("error", code, h)`` at the first refused one
    (:func:`descriptor_check`), or, when all pass, per head ``("descriptor", h)``, ``("table", h)``,
    ``("run", h)``. Nothing is run unless every descriptor passes."""
    if list_problem(config, desc_addr, n_heads)[0]:
        return [("error", 1, 0)]
    events = []
    for head, fields in enumerate(descriptors[:n_heads]):
        events.append(("check", head))
        code = descriptor_check(config, fields, desc_addr, n_heads)
        if code:
            return events + [("error", code, head)]
    for head in range(n_heads):
        events += [("descriptor", head), ("table", head), ("run", head)]
    return events


def engine_controller(bitmap, config):
    """The tiles the engine issues for a head, in order: per query block ``i``, pass A then pass B over its
    kept blocks. Each tile is a dict: ``pass_b``, ``query_block``, ``key_block``, ``kept_index``,
    ``packing`` (:data:`paro.config.PACKING` of the block's bits: a tile covers ``C << packing`` keys in pass A
    and as many queries in pass B), ``query_group``, and ``key_group`` (pass A) or ``dim_group`` (pass B)."""
    B, R, C, d = config.block_size, config.rows, config.cols, config.head_dim
    tiles = []
    for i, row in enumerate(np.asarray(bitmap)):
        kept = [(j, int(b)) for j, b in enumerate(row) if b]
        for index, (j, bits) in enumerate(kept):
            for key_group in range(B // (C << PACKING[bits])):
                for query_group in range(B // R):
                    tiles.append({"pass_b": 0, "query_block": i, "key_block": j, "kept_index": index,
                                  "packing": PACKING[bits], "query_group": query_group, "key_group": key_group})
        for index, (j, bits) in enumerate(kept):
            for query_group in range(B // (C << PACKING[bits])):
                for dim_group in range(d // R):
                    tiles.append({"pass_b": 1, "query_block": i, "key_block": j, "kept_index": index,
                                  "packing": PACKING[bits], "query_group": query_group, "dim_group": dim_group})
    return tiles


def k_reduction(k8, bits, cuts=None):
    """The key lanes of a ``bits``-bit block: :func:`reduce_k` (4 bits: :func:`reduce_int8_to_int4`, 2 bits:
    :func:`reduce_int8_to_int2`); where ``cuts`` cuts the bitwidth at the leading zero, ``(mantissa,
    exponent)`` lanes of :func:`reduce_int8_lz`."""
    if bits in (2, 4) and _leading_zero(bits, cuts):
        return reduce_int8_lz(k8, bits)
    return reduce_k(k8, bits)


def p_lanes(x, row_max, z, bits, key_valid, config):
    """One PV beat's lanes: ``e = 2**-(row_max - x)`` (0 for a padding key) and ``p`` at ``bits`` with the
    lanes' segment shifts ``z``."""
    t = np.asarray(row_max, dtype=np.int64) - np.asarray(x, dtype=np.int64)
    e = exp2_numerators(t, config) if key_valid else np.zeros_like(t)
    return e, p_round(e, bits, z, config)


def segment_shift(row_max, seg_max, config):
    """Leading-zero shift of each lane's segment: :func:`p_shift` of its largest numerator,
    ``2**-(row_max - seg_max)``."""
    peak = exp2_numerators(np.asarray(row_max, dtype=np.int64) - np.asarray(seg_max, dtype=np.int64), config)
    return p_shift(peak[..., None], config)


def score_unit(s, cq_i, ck_cols, bits_cols, shift, valid_cols, block_size):
    """Scores of a query block's rows in exponent units (:func:`scores_log2`), their row maxima over real keys
    (:func:`softmax_row_max`) and their segment maxima (the same per kept block of ``block_size`` columns, the
    most negative ``SCORE_WIDTH``-bit score for a block without a real key): ``(x, m, seg)``, ``seg`` of shape
    (rows, kept blocks)."""
    x = scores_log2(s, cq_i, ck_cols, bits_cols, shift)
    blocks = x.shape[1] // block_size
    seg = np.stack([softmax_row_max(x[:, n * block_size:(n + 1) * block_size],
                                    np.asarray(valid_cols)[n * block_size:(n + 1) * block_size])[:, 0]
                    for n in range(blocks)], axis=1)
    return x, softmax_row_max(x, valid_cols)[:, 0], np.maximum(seg, -(1 << (SCORE_WIDTH - 1)))


def tile_queue(tiles, beats):
    """Each drained beat with its tile: ``[(tile, beat index)]``, tile ``n`` draining ``beats[n]`` beats."""
    return [(tile, beat) for tile, count in zip(tiles, beats) for beat in range(count)]


def output_accumulator(acc, u, cv, z, first):
    """One block's PV columns into the accumulators: :func:`output_accumulate`, from 0 on the row's first
    kept block."""
    return output_accumulate(np.zeros_like(acc) if first else acc, u, cv, z)


def output_stage(acc, row_sum, final_shift, config):
    """Output codes of a query block: :func:`output_codes` with :func:`reciprocal` of the row sums."""
    return output_codes(acc, reciprocal(row_sum, config), final_shift, config)


def operand_feed(tile, q8, k8, v8, p, config):
    """The array operands ``(A, B, mode)`` of one tile (see :func:`engine_controller`) of query block ``i``:
    QK^T: ``A`` = the query group's Q rows (R x d), ``B`` = the key group's K rows (reduced to the block's
    bits, :func:`reduce_k`); PV: ``A`` = the head-dimension group's rows of ``V^T`` (R x B), ``B`` = the query
    group's P rows (``p``: the block's quantized P, B x B)."""
    B, R, C = config.block_size, config.rows, config.cols
    width = C << tile["packing"]
    bits = {packing: bits for bits, packing in PACKING.items()}[tile["packing"]]
    i, j = tile["query_block"], tile["key_block"]
    if not tile["pass_b"]:
        queries = slice(i * B + tile["query_group"] * R, i * B + (tile["query_group"] + 1) * R)
        keys = slice(j * B + tile["key_group"] * width, j * B + (tile["key_group"] + 1) * width)
        return (np.asarray(q8)[queries], reduce_k(np.asarray(k8)[keys], bits, config.k_cuts),
                PEMode.for_block(bits, "qk"))
    dims = slice(tile["dim_group"] * R, (tile["dim_group"] + 1) * R)
    a = np.asarray(v8)[j * B:(j + 1) * B, dims].T
    b = np.asarray(p)[tile["query_group"] * width:(tile["query_group"] + 1) * width]
    return a, b, PEMode.for_block(bits, "pv")


def axi_bursts(address, nbytes, config):
    """The INCR bursts ``(address, beats)`` that move ``nbytes`` from ``address``: as long as allowed
    (``MAX_BURST_BEATS`` beats, never across a ``BURST_BOUNDARY``), in address order."""
    beat = config.axi_data_bits // 8
    longest = min(MAX_BURST_BEATS * beat, BURST_BOUNDARY)
    bursts = []
    while nbytes > 0:
        size = min(nbytes, longest - address % longest)
        bursts.append((address, size // beat))
        address, nbytes = address + size, nbytes - size
    return bursts


def memory_reader(requests, memory, config):
    """Read requests ``(address, rows)`` -> ``(bursts, rows)``: the AXI4 read bursts issued (in order) and the
    token rows delivered (``head_dim`` signed bytes each; ``memory`` maps a byte address to its byte)."""
    d, bursts, rows = config.head_dim, [], []
    for address, count in requests:
        bursts += axi_bursts(address, count * d, config)
        for n in range(count):
            row = bytes(memory[address + n * d + b] for b in range(d))
            rows.append(np.frombuffer(row, dtype=np.int8).astype(np.int64))
    return bursts, rows


def kv_cache(wants, config):
    """The block cache's decisions for a head's K/V wants ``(kind, block)`` (``"K"`` or ``"V"``, in the
    controller's order): per want ``(slot, fetched)`` where ``fetched`` lists the kinds read from memory for
    it, in order (a K fetch brings its block's V with it, the fetcher's prefetch). A block without a slot takes
    the lowest free slot, else the least recently wanted one; a slot holds one block's K and V."""
    slots = config.kv_cache_blocks
    tag, have, used, now, decisions = [None] * slots, [set() for _ in range(slots)], [0] * slots, 0, []
    for kind, block in wants:
        slot = next((s for s in range(slots) if tag[s] == block and have[s]), None)
        fetched = []
        if slot is None:
            free = [s for s in range(slots) if not have[s]]
            slot = free[0] if free else min(range(slots), key=lambda s: used[s])
            tag[slot], have[slot] = block, set()
        if kind not in have[slot]:
            fetched = [kind] + (["V"] if kind == "K" and "V" not in have[slot] else [])
            have[slot] |= set(fetched)
        used[slot], now = now, now + 1
        decisions.append((slot, fetched))
    return decisions


def fetcher(bitmap, descriptor, config, desc_address):
    """The read requests ``(address, lines)`` (lines of ``head_dim`` bytes) the engine makes for a head whose
    descriptor is at ``desc_address``: the descriptor and the block table, with ``SPEC`` every K block once
    (pooled for speculation; ``bitmap`` is then the speculated one, :func:`spec_control`), then per query block ``i``
    (``ROW_FIRST``, ``ROW_COUNT`` of them) its ``B`` query rows and bitmap row ``i``, and the K and V rows the
    block cache (:func:`kv_cache`) fetches for the row's wants (pass A: K of each kept block, pass B: V of
    each). Listed in want order; the hardware's prefetch of the next query block interleaves the Q and
    bitmap requests differently, the multiset is the specification."""
    B, d = config.block_size, config.head_dim
    blocks = int(descriptor["N_BLOCKS"])
    first = int(descriptor["ROW_FIRST"])
    rows = range(first, first + int(descriptor["ROW_COUNT"]))
    stride = bitmap_stride(config, blocks)
    requests = [(desc_address, descriptor_lines(config)),
                (int(descriptor["TABLE_ADDR"]), region_bytes(config, "TABLE_ADDR", blocks) // d)]
    if int(descriptor.get("SPEC", 0)):            # speculation pools every K block once
        requests += [(int(descriptor["K_ADDR"]) + j * B * d, B) for j in range(blocks)]
    wants = []
    for i in rows:
        requests += [(int(descriptor["Q_ADDR"]) + i * B * d, B),
                     (int(descriptor["BITMAP_ADDR"]) + i * stride, stride // d)]
        kept = [int(j) for j in np.flatnonzero(np.asarray(bitmap)[i])]
        wants += [("K", j) for j in kept] + [("V", j) for j in kept]
    base = {"K": int(descriptor["K_ADDR"]), "V": int(descriptor["V_ADDR"])}
    for (kind, block), (_, fetched) in zip(wants, kv_cache(wants, config)):
        requests += [(base[k] + block * B * d, B) for k in fetched]
    return requests


def layer_reads(layer, config):
    """Bytes the engine reads for a layer that passes its checks: every descriptor once in the check pass,
    then each head's :func:`fetcher` requests. Returns ``(total, per_head)``."""
    stride = descriptor_stride(config)
    per_head = [sum(lines * config.head_dim for _, lines in
                    fetcher(prog.computed_bitmap, prog.descriptor, config, layer.desc_addr + head * stride))
                for head, prog in enumerate(layer.heads)]
    return len(layer.heads) * descriptor_lines(config) * config.head_dim + sum(per_head), per_head


def memory_writer(codes, descriptor, config):
    """The output codes' memory writes: ``(bursts, image)`` with the AXI4 write bursts ``(address, beats)`` in
    order (per query block, its ``B x head_dim`` codes) and the bytes written (``int16`` little-endian,
    row-major at ``O_ADDR``)."""
    codes = np.asarray(codes)
    per_block = config.block_size * config.head_dim * OUTPUT_CODE_BYTES
    bursts = []
    for i in range(codes.shape[0] // config.block_size):
        bursts += axi_bursts(descriptor["O_ADDR"] + i * per_block, per_block, config)
    image = codes.astype("<i2").tobytes()
    assert len(image) == region_bytes(config, "O_ADDR", codes.shape[0] // config.block_size)
    return bursts, image


# SimPicker: the LUT-based FP x INT multiplier (hw/lut_multiplier.py).

#: Entries of the LUT multiplier's table: one per value of a 4-bit nibble.
LUT_ENTRIES = 16


def lut_fp(e, config):
    """FP code ``(mant, exp)`` of softmax numerators ``e`` in ``[0, 2**exp_bits]``, ``e ~ mant << exp``:
    ``mant`` keeps ``M + 1 = lut_mant_bits + 1`` significant bits (leading one explicit), rounded half up; a
    carry out of the rounding renormalises (``mant = 2**M``, ``exp + 1``). Numerators below ``2**(M + 1)``
    are exact with ``exp = 0`` (below ``2**M`` without a leading one, like subnormals); ``0 -> (0, 0)``."""
    e = np.asarray(e, dtype=np.int64)
    if e.size and (e.min() < 0 or e.max() > (1 << config.exp_bits)):
        raise ParoError(f"lut_fp takes numerators in [0, 2**{config.exp_bits}], got [{e.min()}, {e.max()}]")
    top = config.lut_mant_bits + 1
    exp = np.maximum(bit_length(e) - top, 0)
    mant = round_shift(e, exp)
    carry = mant >> top > 0
    return np.where(carry, mant >> 1, mant), np.where(carry, exp + 1, exp)


def lut_table(mant):
    """The table one FP operand builds: ``T[j] = mant * j`` for ``j = 0 .. 15`` (last axis)."""
    return np.asarray(mant, dtype=np.int64)[..., None] * np.arange(LUT_ENTRIES)


def lut_multiplier(mant, exp, v):
    """Products of one FP operand ``mant << exp`` and signed INT8 lanes ``v``, as the unit forms them from two
    lookups: ``T[low] + (T[high mod 16] - (mant << 4 if high < 0)) << 4``, shifted left by ``exp``, where
    ``v = 16 * high + low`` (``low`` in [0, 15], ``high`` in [-8, 7]). Exactly ``mant * v * 2**exp``."""
    v = np.asarray(v, dtype=np.int64)
    if v.size and (v.min() < -128 or v.max() > 127):
        raise ParoError(f"lut_multiplier takes INT8 lanes, got [{v.min()}, {v.max()}]")
    table = lut_table(mant)
    low, high = v & 15, v >> 4
    high_part = table[high & 15] - np.where(high < 0, np.int64(mant) << 4, 0)
    return (table[low] + (high_part << 4)) << np.int64(exp)


# SimPicker: speculation, token reuse and the LUT path of a block (docs/simpicker.md).

#: Speculation classes of a (query block, key block): skipped, LUT path (unimportant), full path (important).
SPEC_SKIP, SPEC_LUT, SPEC_FULL = 0, 1, 2
#: Fractional bits of the token-reuse threshold code (``tau**2`` in units of ``2**-REUSE_FRAC_BITS``).
REUSE_FRAC_BITS = 8
#: The K reduction of a LUT-path block's QK^T: the score only needs to weigh an unimportant block.
LUT_QK_BITS = 4


def pooled_codes(x8, block_size):
    """Per block the rounded mean of its ``block_size`` INT8 rows: ``round(sum / B)`` (INT8, ties up)."""
    x8 = np.asarray(x8, dtype=np.int64)
    sums = x8.reshape(-1, block_size, x8.shape[1]).sum(axis=1)
    return round_shift(sums, block_size.bit_length() - 1)


def speculation_scores(q8, k8, cq, ck, shift, block_size):
    """Block-reduced scores ``x_ij``: pooled Q of query block i times pooled K of key block j, scaled to the
    base-2 exponent domain like the engine's scores (:func:`scores_log2`, 8-bit)."""
    s = _int_matmul(pooled_codes(q8, block_size), pooled_codes(k8, block_size))
    return scores_log2(s, np.asarray(cq, dtype=np.int64)[:, None], ck, np.full(len(ck), 8), shift)


def speculation_masses(x, key_tokens, config, allowed=None):
    """Estimated mass of every block from its block-reduced score: ``m_ij = 2**-(max_j x_ij - x_ij)`` through
    the engine's exponent unit (:func:`exp2_numerators`) times the block's real keys ``key_tokens[j]``; 0 for
    blocks without real keys and blocks ``allowed`` (a plan's bitmap, optional) drops."""
    x = np.asarray(x, dtype=np.int64)
    live = np.broadcast_to(np.asarray(key_tokens) > 0, x.shape).copy()
    if allowed is not None:
        live &= np.asarray(allowed) > 0
    best = np.where(live, x, np.iinfo(np.int64).min).max(axis=1, keepdims=True)
    e = exp2_numerators(np.where(live, best - x, 0), config)
    return np.where(live, e * np.asarray(key_tokens, dtype=np.int64), 0)


def speculation_classes(masses, important_code, negligible_code):
    """Class of every block of each row from the estimated masses (:func:`speculation_masses`), blocks taken
    by descending mass (ties: lower key block first): ``SPEC_FULL`` while the mass before the block is below
    ``important_code / 2**SPEC_FRAC_BITS`` of the row's total (the blocks that make up that fraction),
    ``SPEC_SKIP`` when the mass from the block to the end is at most ``negligible_code / 2**SPEC_FRAC_BITS``
    of it (a negligible tail), else ``SPEC_LUT``; blocks of zero mass are skipped. The row's largest block is
    always important."""
    masses = np.asarray(masses, dtype=np.int64)
    order = np.argsort(-masses, axis=1, kind="stable")
    sorted_mass = np.take_along_axis(masses, order, axis=1)
    total = sorted_mass.sum(axis=1, keepdims=True)
    before = np.cumsum(sorted_mass, axis=1) - sorted_mass
    tail = total - before
    full = (before << SPEC_FRAC_BITS) < important_code * total
    skip = (tail << SPEC_FRAC_BITS) <= negligible_code * total
    ranked = np.where(full, SPEC_FULL, np.where(skip, SPEC_SKIP, SPEC_LUT))
    ranked[:, 0] = SPEC_FULL
    ranked = np.where(sorted_mass > 0, ranked, SPEC_SKIP)
    classes = np.empty_like(ranked)
    np.put_along_axis(classes, order, ranked, axis=1)
    return classes


def spec_control(q8, k8, cq, ck, shift, n_tokens, bitmap, important_code, negligible_code, config,
                 mode=SPEC_SKIP_ONLY):
    """The engine's block speculation (:class:`paro.hw.spec_control.SpecControl`) of a head: its ``bitmap``
    (in memory) with every block the speculation classes negligible set to 0 and, with ``mode``
    ``SPEC_LOW_BITS``, every unimportant one at 4 bits (:func:`low_bit_blocks`), with ``SPEC_LUT_PATH`` on the
    LUT path (``LUT_BLOCK``); per query block from the
    block-reduced scores of the pooled Q and K (:func:`speculation_scores` with the head's table multipliers
    ``cq``, ``ck`` and ``SCORE_SHIFT``), masses over the blocks the bitmap keeps (:func:`speculation_masses`)
    and :func:`speculation_classes`. Important blocks keep their bits."""
    B = config.block_size
    bitmap = np.asarray(bitmap)
    x = speculation_scores(q8, k8, cq, ck, shift, B)
    key_tokens = np.clip(n_tokens - np.arange(bitmap.shape[1]) * B, 0, B)
    classes = speculation_classes(speculation_masses(x, key_tokens, config, bitmap), important_code, negligible_code)
    cheap = {SPEC_LOW_BITS: low_bit_blocks(bitmap), SPEC_LUT_PATH: np.full_like(bitmap, LUT_BLOCK)}.get(mode, bitmap)
    return np.where(classes == SPEC_SKIP, 0, np.where(classes == SPEC_LUT, cheap, bitmap)).astype(bitmap.dtype)


def reuse_check(scaled_t, scaled_a, tau_code):
    """The reuse test (:class:`paro.hw.reuse_check.ReuseCheck`) of dequantised integer queries (rows of
    ``q8 * q_mult``): ``2**REUSE_FRAC_BITS * |t - a|**2 <= tau_code * |a|**2``, per row."""
    t, a = np.asarray(scaled_t, dtype=np.int64), np.asarray(scaled_a, dtype=np.int64)
    diff = t - a
    return ((diff * diff).sum(axis=-1) << REUSE_FRAC_BITS) <= tau_code * (a * a).sum(axis=-1)


def reuse_anchors(q8, q_mult, reference, tau_code, block_size):
    """Token reuse: ``anchor[t]`` is the token whose output token ``t`` takes (``t`` itself when computed).

    ``reference[t]`` is the token ``t`` is compared with (-1: none; text tokens, the first frame); chains are
    resolved in order of depth. Token ``t`` reuses ``a = anchor[reference[t]]`` when :func:`reuse_check`
    passes on the dequantised integer codes ``q8 * q_mult[block]`` (``q_mult``: the Q blocks' integer scale
    mantissas, one exponent), else it is computed."""
    q8 = np.asarray(q8, dtype=np.int64)
    reference = np.asarray(reference, dtype=np.int64)
    n = len(reference)
    scaled = q8[:n] * np.repeat(np.asarray(q_mult, dtype=np.int64), block_size)[:n, None]
    depth = np.zeros(n, dtype=np.int64)
    while True:                                        # depth of each chain, shallow tokens first
        deeper = np.where(reference >= 0, depth[np.maximum(reference, 0)] + 1, 0)
        if np.array_equal(deeper, depth):
            break
        if deeper.max() > n:
            raise ParoError("token reuse references form a cycle")
        depth = deeper
    anchor = np.arange(n)
    for level in range(1, int(depth.max()) + 1 if n else 1):
        tokens = np.flatnonzero(depth == level)
        a = anchor[reference[tokens]]
        anchor[tokens] = np.where(reuse_check(scaled[tokens], scaled[a], tau_code), a, tokens)
    return anchor


def lut_path(e_block, v8_block, config):
    """SimPicker's LUT path for one block's PV (:class:`paro.hw.lut_path.LutPath`): ``(u, z)``. The numerators
    ``e_block`` (rows, keys) as FP operands (:func:`lut_fp`) times the block's INT8 V rows ``v8_block``
    (keys, d), summed over the keys exactly (``w``, the sum of :func:`lut_multiplier` products), then brought
    to the 8-bit path's scale with each row's segment shift ``z`` (:func:`p_shift`): ``u = round(w * 127 *
    2**z / 2**exp_bits)``, the value an 8-bit block's drained column has (``sum p v`` with ``p ~ e * 2**z *
    127 / 2**exp_bits``) but rounded once per sum instead of once per numerator. ``|u| <= 127 * 128 * B``,
    as an array column's."""
    e_block = np.asarray(e_block, dtype=np.int64)
    z = p_shift(e_block, config)
    mant, exp = lut_fp(e_block, config)
    w = _int_matmul(mant << exp, np.asarray(v8_block, dtype=np.int64).T)
    return round_shift(w * P_LEVELS[8], config.exp_bits - z[..., None]), z


def lut_block_accumulate(acc, e_block, v8_block, cv8, config):
    """A LUT-path block's PV into the output accumulator: :func:`lut_path`'s ``u`` and ``z`` added like a
    drained 8-bit column (:func:`output_accumulate` with the block's ``cv8``)."""
    u, z = lut_path(e_block, v8_block, config)
    return output_accumulate(acc, u, cv8, z)


def row_packer(mask, group):
    """SimPicker's grouping of one query block: the rows still computed after reuse (``mask``, one bool per
    row), in ascending order, packed into array groups of ``group`` rows: a list of ``(row, group_end, last,
    empty)``; a block with no computed row gives one beat ``(0, True, True, True)``."""
    rows = np.flatnonzero(np.asarray(mask, dtype=bool)).tolist()
    if not rows:
        return [(0, True, True, True)]
    return [(row, n % group == group - 1 or n == len(rows) - 1, n == len(rows) - 1, False)
            for n, row in enumerate(rows)]


def row_buffer(rows, base, word, readers, word_bytes):
    """What the ``readers`` ports of a token-row buffer return for a read at row ``base``, word ``word``
    (``rows``: int8 ``[n, head_dim]``): reader ``n`` gets bytes ``word * word_bytes ..`` of row ``base + n``
    if that row lies in ``base``'s aligned group of ``readers`` rows (every row the engine reads does), else
    ``None`` (a bank of another group: the engine never uses it). Where each word is kept:
    :func:`~paro.sw.contract.row_buffer_place`."""
    rows = np.asarray(rows, dtype=np.int64)
    group = base // readers
    return [rows[base + n, word * word_bytes:(word + 1) * word_bytes].tolist()
            if (base + n) // readers == group else None for n in range(readers)]


def score_buffer(scores, query, key, lanes, banks):
    """What the ``lanes`` read ports of the score buffer return for a read at ``query`` (the first lane's)
    and kept key ``key`` (``scores``: ``[block_size, max_kept_keys]``): lane ``n`` gets ``scores[query + n,
    key]`` if that query lies in ``query``'s aligned group of ``banks`` queries, else ``None``. Where each
    score is kept: :func:`~paro.sw.contract.score_buffer_place`."""
    scores = np.asarray(scores, dtype=np.int64)
    group = query // banks
    return [int(scores[query + n, key]) if (query + n) // banks == group else None for n in range(lanes)]
