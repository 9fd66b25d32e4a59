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
