"""Golden attention stages against straightforward float formulas, within their stated fixed-point error."""

import numpy as np
import pytest

from paro.config import AcceleratorConfig
from paro.sw import golden
from paro.sw.quant import quantize_head
from paro.sw.sparsity import attention_rows

CONFIG = AcceleratorConfig(head_dim=32, block_size=16)


def test_exp2_numerators_match_two_to_the_minus_t():
    frac = CONFIG.score_frac_bits
    t = np.arange(0, 20 << frac)
    e = golden.exp2_numerators(t, CONFIG)
    exact = 2.0 ** (CONFIG.exp_bits - t / (1 << frac))
    assert e[0] == 1 << CONFIG.exp_bits
    assert np.all(np.diff(e) <= 0)
    assert np.all(np.abs(e - exact) <= 1.5 + 2.0 ** -12 * exact)     # two table roundings + final rounding
    assert np.all(e[t >> frac > CONFIG.exp_bits] == 0)


def test_p_shift_puts_the_block_max_in_the_top_octave():
    rng = np.random.default_rng(3)
    e = rng.integers(1, 1 << CONFIG.exp_bits, size=(500, 16)) >> rng.integers(0, 14, size=(500, 1))
    z = golden.p_shift(e, CONFIG)
    peak = e.max(axis=1) << z
    assert np.all((peak >= 1 << (CONFIG.exp_bits - 1)) & (peak <= 1 << CONFIG.exp_bits))
    assert golden.p_shift(np.array([[1 << CONFIG.exp_bits, 5]]), CONFIG)[0] == 0
    assert golden.p_shift(np.zeros((1, 4), dtype=np.int64), CONFIG)[0] == 0


@pytest.mark.parametrize("bits", [4, 8])
def test_p_quantize_rounds_to_the_nearest_level(bits):
    rng = np.random.default_rng(bits)
    e = rng.integers(0, (1 << CONFIG.exp_bits) + 1, size=(200, 16)) >> rng.integers(0, 12, size=(200, 1))
    p, z = golden.p_quantize(e, bits, CONFIG)
    levels = golden.P_LEVELS[bits]
    exact = e * 2.0 ** z[:, None] * levels / (1 << CONFIG.exp_bits)
    assert p.max() <= levels and p.min() >= 0
    assert np.all(np.abs(p - exact) <= 0.5)


def test_reciprocal_is_floor():
    l = np.array([1 << CONFIG.exp_bits, 123457, (1 << CONFIG.row_sum_width) - 1])
    r = golden.reciprocal(l, CONFIG)
    assert np.all(r * l <= 1 << CONFIG.recip_bits) and np.all((r + 1) * l > 1 << CONFIG.recip_bits)
    assert r.max() == 1 << (CONFIG.recip_quotient_bits - 1)                   # the largest has every bit
    # a sum below 2**exp_bits (no row has one: its maximum's numerator alone is 2**exp_bits) counts as
    # 2**exp_bits, and 0 (no real key) gives 0
    small = golden.reciprocal(np.array([0, 1, (1 << CONFIG.exp_bits) - 1]), CONFIG)
    assert small.tolist() == [0, r[0], r[0]]


def _random_head(seed, tokens=72, d=32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((tokens, d)).astype(np.float32) * 2
    k = rng.standard_normal((tokens, d)).astype(np.float32) * 2 + 0.5
    v = rng.standard_normal((tokens, d)).astype(np.float32)
    return q, k, v


def test_dense_8bit_head_matches_float_attention():
    q, k, v = _random_head(1)
    head, _ = quantize_head(q, k, v, CONFIG.block_size)
    nb = head.q8.shape[0] // CONFIG.block_size
    codes, out_exp = golden.attention_head(head, np.full((nb, nb), 8, dtype=np.uint8), CONFIG)
    out = codes[:len(q)] * 2.0 ** -out_exp
    ref = attention_rows(q, k, 0, len(q), dtype=np.float64) @ v
    cosine = (out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref)
    assert cosine > 0.999
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_stage_widths_and_consistency():
    q, k, v = _random_head(2)
    head, _ = quantize_head(q, k, v, CONFIG.block_size)
    nb = head.q8.shape[0] // CONFIG.block_size
    bitmap = np.random.default_rng(5).choice([0, 4, 8], size=(nb, nb)).astype(np.uint8)
    bitmap[np.arange(nb), np.arange(nb)] = 8
    for i in range(nb):
        t = golden.attention_block_row(i, head, bitmap[i], CONFIG, trace=True)
        limit = 1 << (CONFIG.acc_width - 1)
        assert np.all((t["s"] >= -limit) & (t["s"] < limit))
        assert t["e"].max() <= 1 << CONFIG.exp_bits
        assert np.array_equal(t["l"], t["e"].sum(axis=1))
        assert np.all(t["l"][: min(CONFIG.block_size, len(q) - i * CONFIG.block_size)] >= 1 << CONFIG.exp_bits)
        assert np.all(t["l"] < 1 << CONFIG.row_sum_width)
        for p, (_, b) in zip(t["p"], t["kept"]):
            assert p.max() <= golden.P_LEVELS[b]
        assert np.abs(golden.round_shift(t["acc"], t["pre_shift"])).max() < 1 << 31
        # padding keys never contribute
        cols = np.concatenate([np.arange(j * 16, (j + 1) * 16) for j, _ in t["kept"]])
        assert not t["e"][:, cols >= len(q)].any()


def test_golden_is_deterministic():
    q, k, v = _random_head(4)
    head, _ = quantize_head(q, k, v, CONFIG.block_size)
    nb = head.q8.shape[0] // CONFIG.block_size
    bitmap = np.full((nb, nb), 4, dtype=np.uint8)
    a = golden.attention_head(head, bitmap, CONFIG)[0]
    b = golden.attention_head(head, bitmap, CONFIG)[0]
    assert np.array_equal(a, b)
