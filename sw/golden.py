"""Bit-exact integer model of the accelerator: the specification of every integer the hardware produces.

Each hardware block ``hw/X.py`` has its twin here under the same name, and the benches in ``sim/`` compare
the emitted Verilog to these functions bit for bit. Everything is plain numpy on ``int64`` arrays; widths
come from :class:`paro.config.AcceleratorConfig`.

Operand word of the PE (``b``, 8 bits), shared by the hardware layout ``hw.pe.OperandB``::

    INT8   b[7:0] = one signed value
    INT4   b[3:0] = signed value 0, b[7:4] = signed value 1
    UINT4  b[3:0] = unsigned value 0, b[7:4] = unsigned value 1

In the 4-bit modes value 0 goes to accumulator 0 and value 1 to accumulator 1.
"""

import numpy as np

from paro.config import PEMode
from paro.errors import ParoError

__all__ = [
    "wrap", "operand_range", "check_operand", "pack_operand_b", "unpack_operand_b",
    "pe_products", "pe_step", "array_tile", "array_drain_beats", "reduce_int8_to_int4",
    "round_shift", "int_multipliers", "score_multipliers", "qk_block", "scores_log2", "softmax_row_max",
    "exp_tables", "exp2_numerators", "softmax_row_sum", "p_shift", "p_quantize", "pv_block",
    "output_accumulate", "value_multipliers", "output_format", "output_pre_shift", "output_final_shift",
    "reciprocal", "output_codes", "attention_block_row", "attention_head",
]


def wrap(value, width):
    """Two's complement wrap of ``value`` to a signed ``width``-bit integer (what a register of that width holds)."""
    value = np.asarray(value, dtype=np.int64)
    half = np.int64(1) << (width - 1)
    return ((value + half) & ((np.int64(1) << width) - 1)) - half


def operand_range(mode):
    """Inclusive ``(low, high)`` range of one ``b`` value in ``mode``."""
    mode = PEMode(mode)
    return {PEMode.INT8: (-128, 127), PEMode.INT4: (-8, 7), PEMode.UINT4: (0, 15)}[mode]


def check_operand(values, mode, name="b"):
    low, high = operand_range(mode)
    values = np.asarray(values)
    if values.size and (values.min() < low or values.max() > high):
        raise ParoError(f"{name} values must be in [{low}, {high}] for PE mode {PEMode(mode).name}, "
                        f"got [{values.min()}, {values.max()}]")


def pack_operand_b(values, mode):
    """Pack ``b`` values into 8-bit operand words along the last axis.

    INT8: one value a word (shape unchanged). INT4/UINT4: values ``2n`` and ``2n+1`` share word ``n`` (the
    last axis halves, so it must be even).
    """
    mode = PEMode(mode)
    values = np.asarray(values, dtype=np.int64)
    check_operand(values, mode)
    if mode is PEMode.INT8:
        return values & 0xFF
    if values.shape[-1] % 2:
        raise ParoError(f"4-bit operands pack in pairs; got an odd count {values.shape[-1]}")
    return (values[..., 0::2] & 0xF) | ((values[..., 1::2] & 0xF) << 4)


def unpack_operand_b(words, mode):
    """Inverse of :func:`pack_operand_b`."""
    mode = PEMode(mode)
    words = np.asarray(words, dtype=np.int64) & 0xFF
    if mode is PEMode.INT8:
        return np.where(words >= 128, words - 256, words)
    lo, hi = words & 0xF, words >> 4
    if mode is PEMode.INT4:
        lo, hi = np.where(lo >= 8, lo - 16, lo), np.where(hi >= 8, hi - 16, hi)
    out = np.empty(words.shape[:-1] + (2 * words.shape[-1],), dtype=np.int64)
    out[..., 0::2], out[..., 1::2] = lo, hi
    return out


def pe_products(a, b_word, mode):
    """The PE's two products for signed 8-bit ``a`` and operand word ``b_word``: ``(p0, p1)``.

    Mirrors ``hw.pe``: two signed 8 x 5 sub-multipliers. Sub-multiplier 0 takes ``b[3:0]`` (zero-extended in
    INT8 and UINT4, sign-extended in INT4); sub-multiplier 1 takes ``b[7:4]`` (sign-extended in INT8 and
    INT4, zero-extended in UINT4). INT8 combines them, ``p0 = (ph << 4) + pl`` (the full 8 x 8 product),
    ``p1 = 0``; the 4-bit modes keep them apart.
    """
    mode = PEMode(mode)
    a = np.asarray(a, dtype=np.int64)
    b_word = np.asarray(b_word, dtype=np.int64) & 0xFF
    lo, hi = b_word & 0xF, b_word >> 4
    if mode is PEMode.INT4:
        lo = np.where(lo >= 8, lo - 16, lo)
    if mode in (PEMode.INT8, PEMode.INT4):
        hi = np.where(hi >= 8, hi - 16, hi)
    pl, ph = a * lo, a * hi
    if mode is PEMode.INT8:
        return (ph << 4) + pl, np.zeros_like(pl)
    return pl, ph


def pe_step(acc, a, b_word, mode, fresh, acc_width):
    """One valid PE cycle: ``acc[k] = wrap((0 if fresh else acc[k]) + p[k])`` for both accumulators.

    ``acc`` is a pair; ``fresh`` is true on the first beat of a tile. Returns the new pair.
    """
    p0, p1 = pe_products(a, b_word, mode)
    base = (0, 0) if fresh else acc
    return int(wrap(base[0] + p0, acc_width)), int(wrap(base[1] + p1, acc_width))


def array_tile(a, b, mode, acc_width):
    """One array tile: ``C = A @ B.T`` with every accumulator wrapped to ``acc_width`` bits.

    ``a``: signed 8-bit, shape (R, K). ``b``: values in ``mode``'s range, shape (N, K) with N = C columns
    (INT8) or 2C (4-bit modes, rows ``2j`` and ``2j+1`` share PE column ``j``). Returns int64 (R, N).
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


def reduce_int8_to_int4(values):
    """The 4-bit operand reduction of 4-bit blocks: ``clip((x + 8) >> 4, -8, 7)``.

    Rounds an INT8 value to the nearest multiple of 16 (ties up) and returns it in units of 16, so
    ``16 * reduce_int8_to_int4(x)`` approximates ``x`` with error at most 8 (127 saturates to 112).
    """
    values = np.asarray(values, dtype=np.int64)
    check_operand(values, PEMode.INT8, "int8 operand")
    return np.clip((values + 8) >> 4, -8, 7)


# ===================================================================================================
# Attention of one head (the engine: QK^T on the array, softmax unit, P quantizer, PV, output stage)
# ===================================================================================================
#
# Inputs (:class:`sw.quant.QuantizedHead`): INT8 Q, smoothed K and V, padded to whole blocks, with
# per-block scales; the head's bitmap ``uint8[nq, nk]`` (0 = skipped). Stages, per query block i:
#
#   qk_block        S = Q8_i K8_j^T (8-bit block) or Q8_i K4_j^T with K4 = reduce_int8_to_int4(K8_j)
#                   (4-bit block); acc_width-bit integers, as the array computes them.
#   scores_log2     x = round(S * cq_i * ck_j * (16 for 4-bit) / 2**score_shift): the score in base-2
#                   exponent units with score_frac_bits fractional bits (cq, ck from score_multipliers).
#   softmax_row_max m = max of x over kept blocks and real (unpadded) keys.
#   exp2_numerators e = 2**(x - m) in UQ1.exp_bits via two tables of 2**(score_frac_bits/2) entries
#                   and a shift; 0 for skipped blocks and padding keys. e <= 2**exp_bits.
#   softmax_row_sum l = sum of e (row_sum_width bits).
#   p_quantize      P~ = round(e * 2**z * L_b / 2**exp_bits), L_8 = 127, L_4 = 15: the numerators relative to
#                   the row max (FlashAttention-style: normalised at the output), with a leading-zero shift z
#                   per row of each block (p_shift) so low-mass blocks keep their precision at 4 bits.
#   pv_block        U = P~_ij V8_j (the array's PV tile, INT8 or UINT4 mode).
#   output_accumulate  A = sum_j round(U_ij * cv_{j,b} / 2**z): cv = v_scale_j / L_b * 2**ev.
#   reciprocal      r = floor(2**recip_bits / l).
#   output_codes    codes = clip(round(round(A / 2**pre_shift) * r / 2**final_shift)), out_bits signed;
#                   the dequantised output is codes * 2**-out_exp.

LOG2E = 1.4426950408889634
P_LEVELS = {8: 127, 4: 15}


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
    """Exact integer ``a @ b_t.T`` through float64 BLAS (exact while every sum stays below 2**53)."""
    return np.rint(np.asarray(a, dtype=np.float64) @ np.asarray(b_t, dtype=np.float64).T).astype(np.int64)


def qk_block(q8_rows, k8_block, bits, acc_width):
    """Scores of one block as the array computes them: INT8 mode (8-bit) or INT4 mode with K reduced."""
    if bits == 8:
        return wrap(_int_matmul(q8_rows, k8_block), acc_width)
    if bits == 4:
        return wrap(_int_matmul(q8_rows, reduce_int8_to_int4(k8_block)), acc_width)
    raise ParoError(f"qk_block computes 4- and 8-bit blocks, got {bits}")


def scores_log2(s, cq_i, ck_cols, four_bit_cols, shift):
    """Scores in base-2 exponent units: ``round(S * cq_i * ck_j * (16 for 4-bit blocks) / 2**shift)``."""
    factor = np.where(four_bit_cols, 16, 1) * np.asarray(ck_cols, dtype=np.int64)
    return round_shift(np.asarray(s, dtype=np.int64) * (cq_i * factor), shift)


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


#: Largest leading-zero shift of a (row, block) segment of numerators (a 4-bit field in hardware).
P_SHIFT_MAX = 15


def p_shift(e_block, config):
    """Leading-zero shift per row of a block: ``z = clip(exp_bits - bit_length(max e), 0, 15)``.

    Scaling the segment by ``2**z`` puts its largest numerator in ``[2**(exp_bits-1), 2**exp_bits]``, so a
    low-mass block keeps its relative precision at 4 bits (block floating point over the row segment).
    """
    peak = np.asarray(e_block, dtype=np.int64).max(axis=-1)
    length = np.zeros_like(peak)
    nonzero = peak > 0
    length[nonzero] = np.floor(np.log2(peak[nonzero])).astype(np.int64) + 1
    # log2 of an exact power of two can round below the integer; correct the bit length exactly.
    length = np.where(nonzero & ((np.int64(1) << np.maximum(length, 0)) <= peak), length + 1, length)
    length = np.where(nonzero & ((np.int64(1) << np.maximum(length - 1, 0)) > peak), length - 1, length)
    return np.where(nonzero, np.clip(config.exp_bits - length, 0, P_SHIFT_MAX), 0)


def p_quantize(e_block, bits, config):
    """Numerators of one block at its bitwidth: ``(p, z)``, ``p = min(L_b, round(e * 2**z * L_b / 2**exp_bits))``.

    ``z`` (per row, :func:`p_shift`) is undone at the output accumulation.
    """
    levels = P_LEVELS[bits]
    z = p_shift(e_block, config)
    p = round_shift(np.asarray(e_block, dtype=np.int64) * levels, config.exp_bits - z[..., None])
    return np.minimum(levels, p), z


def output_accumulate(acc, u, cv, z):
    """``acc + round(u * cv / 2**z)`` with the block's V multiplier ``cv`` and per-row shifts ``z``."""
    return acc + round_shift(np.asarray(u, dtype=np.int64) * np.int64(cv), np.asarray(z)[:, None])


def pv_block(p_block, v8_block, bits, acc_width):
    """The array's PV tile for one block: ``P~ V8`` (INT8 mode for 8-bit P, UINT4 mode for 4-bit)."""
    check_operand(p_block, PEMode.for_block(bits, "pv"), "P")
    return wrap(_int_matmul(p_block, np.asarray(v8_block).T), acc_width)


def value_multipliers(v_scale, bitwidths):
    """``(cv, ev)``: ``cv[j, b] ~ v_scale_j / L_b * 2**ev`` for every computed bitwidth b (dict by b)."""
    bits = [b for b in sorted(bitwidths) if b in P_LEVELS]
    table = np.stack([np.asarray(v_scale, dtype=np.float64) / P_LEVELS[b] for b in bits], axis=1)
    mantissas, exponent = int_multipliers(table)
    return {b: mantissas[:, n] for n, b in enumerate(bits)}, exponent


def output_format(v_scale, config):
    """Output exponent ``out_exp``: codes * 2**-out_exp hold any convex combination of V (|O| <= 128 max sv)."""
    bound = 128.0 * float(np.max(v_scale))
    return int(np.floor(np.log2(((1 << (config.out_bits - 1)) - 1) / bound)))


def output_pre_shift(config):
    """Bits dropped from the output accumulator before the reciprocal multiply, so the product fits 63 bits.

    The accumulator sums at most ``max_seq_len / block_size`` block products of ``acc_width + 15`` bits.
    """
    blocks = config.max_seq_len // config.block_size
    width = config.acc_width + 15 + max(1, (blocks - 1).bit_length()) + 1
    return max(0, width - 32)


def output_final_shift(ev, out_exp, config):
    """The output stage's last shift: from ``A * 2**-ev / (l * 2**-exp_bits)`` to codes in ``2**-out_exp``."""
    return config.recip_bits + ev - config.exp_bits - out_exp - output_pre_shift(config)


def output_codes(acc, r, final_shift, config):
    """``clip(round(round(A / 2**pre) * r / 2**final_shift))`` in ``out_bits`` signed bits."""
    limit = 1 << (config.out_bits - 1)
    scaled = round_shift(acc, output_pre_shift(config)) * np.asarray(r, dtype=np.int64)[:, None]
    return np.clip(round_shift(scaled, final_shift), -limit, limit - 1)


def reciprocal(row_sum, config):
    """``floor(2**recip_bits / l)`` of each row sum (``l >= 2**exp_bits``: the row max contributes 1.0)."""
    row_sum = np.asarray(row_sum, dtype=np.int64)
    return np.where(row_sum > 0, (np.int64(1) << config.recip_bits) // np.maximum(row_sum, 1), 0)


def attention_block_row(i, head, bitmap_row, config, trace=False):
    """Output codes (B, d) of query block ``i``; with ``trace`` also every intermediate integer (a dict)."""
    B = config.block_size
    rows = slice(i * B, (i + 1) * B)
    kept = [(j, int(b)) for j, b in enumerate(bitmap_row) if b]
    if not kept:
        raise ParoError(f"query block {i} keeps no key block; every query row must keep at least one")
    cq, ck, shift = head.score_multipliers(config)
    cols = np.concatenate([np.arange(j * B, (j + 1) * B) for j, _ in kept])
    s = np.concatenate([qk_block(head.q8[rows], head.k8[j * B:(j + 1) * B], b, config.acc_width)
                        for j, b in kept], axis=1)
    x = scores_log2(s, cq[i], np.repeat([ck[j] for j, _ in kept], B),
                    np.repeat([b == 4 for _, b in kept], B), shift)
    valid = cols < head.n_tokens
    m = softmax_row_max(x, valid)
    e = np.where(valid, exp2_numerators(np.where(valid, m - x, 0), config), 0)
    l = softmax_row_sum(e)
    cv, ev = head.value_multipliers(config)
    acc = np.zeros((B, head.v8.shape[1]), dtype=np.int64)
    p_all, u_all = [], []
    z_all = []
    for n, (j, b) in enumerate(kept):
        p, z = p_quantize(e[:, n * B:(n + 1) * B], b, config)
        u = pv_block(p, head.v8[j * B:(j + 1) * B], b, config.acc_width)
        acc = output_accumulate(acc, u, cv[b][j], z)
        if trace:
            p_all.append(p)
            z_all.append(z)
            u_all.append(u)
    r = reciprocal(l, config)
    final = output_final_shift(ev, head.out_exp(config), config)
    codes = output_codes(acc, r, final, config)
    if not trace:
        return codes
    return {"kept": kept, "s": s, "x": x, "m": m[:, 0], "e": e, "l": l, "p": p_all, "z": z_all, "u": u_all,
            "acc": acc, "r": r, "codes": codes, "pre_shift": output_pre_shift(config), "final_shift": final}


def attention_head(head, bitmap, config):
    """Output codes (padded tokens, d) of one head and its output exponent (dequantise: codes * 2**-exp)."""
    bitmap = np.asarray(bitmap)
    codes = np.concatenate([attention_block_row(i, head, bitmap[i], config) for i in range(bitmap.shape[0])])
    return codes, head.out_exp(config)
