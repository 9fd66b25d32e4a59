"""The golden PE/array twins against plain integer arithmetic, exhaustively where the space is small."""

import numpy as np
import pytest

from paro.config import PEMode
from paro.errors import ParoError
from paro.sw.golden import (array_drain_beats, array_tile, pack_operand_b, pe_products, pe_step,
                       reduce_int8_to_int4, unpack_operand_b, wrap)

A = np.arange(-128, 128)


def test_int8_products_exhaustive():
    a, b = np.meshgrid(A, A, indexing="ij")
    p0, *rest = pe_products(a, pack_operand_b(b, PEMode.INT8), PEMode.INT8)
    assert np.array_equal(p0, a * b)
    assert not any(p.any() for p in rest)


@pytest.mark.parametrize("mode,low,high", [(PEMode.INT4, -8, 7), (PEMode.UINT4, 0, 15)])
def test_4bit_products_exhaustive(mode, low, high):
    values = np.arange(low, high + 1)
    a, b0, b1 = np.meshgrid(A, values, values, indexing="ij")
    words = pack_operand_b(np.stack([b0, b1], axis=-1), mode)[..., 0]
    p0, p1, p2, p3 = pe_products(a, words, mode)
    assert np.array_equal(p0, a * b0)
    assert np.array_equal(p1, a * b1)
    assert not p2.any() and not p3.any()


@pytest.mark.parametrize("mode,low,high", [(PEMode.INT2, -2, 1), (PEMode.UINT2, 0, 3)])
def test_2bit_products_exhaustive(mode, low, high):
    values = np.arange(low, high + 1)
    a, *b = np.meshgrid(A, values, values, values, values, indexing="ij")
    words = pack_operand_b(np.stack(b, axis=-1), mode)[..., 0]
    assert words.min() == 0 and words.max() == 255 and len(np.unique(words)) == 256   # every word, once
    for product, bk in zip(pe_products(a, words, mode), b):
        assert np.array_equal(product, a * bk)


@pytest.mark.parametrize("mode,low,high", [(PEMode.INT8, -128, 127), (PEMode.INT4, -8, 7), (PEMode.UINT4, 0, 15),
                                           (PEMode.INT2, -2, 1), (PEMode.UINT2, 0, 3)])
def test_pack_round_trip(mode, low, high):
    rng = np.random.default_rng(1)
    values = rng.integers(low, high + 1, size=(5, 16))
    assert np.array_equal(unpack_operand_b(pack_operand_b(values, mode), mode), values)


def test_pack_rejects_out_of_range_and_odd_counts():
    with pytest.raises(ParoError, match=r"b values must be in \[-8, 7\] for PE mode INT4, got \[0, 8\]"):
        pack_operand_b([0, 8], PEMode.INT4)
    with pytest.raises(ParoError, match="4-bit operands pack 2 to a word; got a count 3"):
        pack_operand_b([0, 1, 2], PEMode.UINT4)
    with pytest.raises(ParoError, match="2-bit operands pack 4 to a word; got a count 6"):
        pack_operand_b([0, 1, 1, 0, 1, 0], PEMode.INT2)
    assert pack_operand_b([1, -2, 0, -1], PEMode.INT2) == 0b11_00_10_01


def test_wrap_is_twos_complement():
    assert wrap(1 << 21, 22) == -(1 << 21)
    assert wrap((1 << 21) - 1, 22) == (1 << 21) - 1
    assert wrap(-(1 << 21) - 1, 22) == (1 << 21) - 1


def test_pe_step_restarts_on_fresh_and_wraps():
    word = int(pack_operand_b([1, -2, 0, -1], PEMode.INT2)[0])
    assert pe_step((5, 7, 1, 1), 3, word, PEMode.INT2, False, 22) == (8, 1, 1, -2)
    acc = pe_step((5, 7), 3, 4, PEMode.INT8, True, 22)
    assert acc == (12, 0)
    acc = pe_step(acc, -128, pack_operand_b(-128, PEMode.INT8), PEMode.INT8, False, 22)
    assert acc == (12 + 16384, 0)
    big = ((1 << 21) - 1, 0)
    assert pe_step(big, 1, 1, PEMode.INT8, False, 22)[0] == -(1 << 21)


@pytest.mark.parametrize("mode,low,high,cols", [(PEMode.INT8, -128, 127, 4), (PEMode.INT4, -8, 7, 8),
                                                (PEMode.UINT4, 0, 15, 8), (PEMode.INT2, -2, 1, 16),
                                                (PEMode.UINT2, 0, 3, 16)])
def test_array_tile_is_matmul_and_drains_by_column(mode, low, high, cols):
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, size=(4, 64))
    b = rng.integers(low, high + 1, size=(cols, 64))
    c = array_tile(a, b, mode, 22)
    assert np.array_equal(c, a @ b.T)
    beats = array_drain_beats(c)
    assert len(beats) == cols and all(np.array_equal(beats[n], c[:, n]) for n in range(cols))


def test_reduce_int8_to_int4_error_bound():
    reduced = reduce_int8_to_int4(A)
    assert reduced.min() == -8 and reduced.max() == 7
    error = np.abs(16 * reduced - A)
    assert error[A <= 119].max() <= 8            # nearest multiple of 16
    assert 16 * reduce_int8_to_int4(127) == 112  # saturates at the top
