"""AcceleratorConfig validation: every bad parameter is refused with one line naming it."""

import pytest

from paro.config import AcceleratorConfig, PEMode, min_acc_width
from paro.errors import ParoError


@pytest.mark.parametrize("kwargs,message", [
    ({"rows": 3}, "rows must be a power of two in [2, 64], got 3"),
    ({"cols": 1}, "cols must be a power of two in [2, 64], got 1"),
    ({"rows": 128}, "rows must be a power of two in [2, 64], got 128"),
    ({"block_size": 48}, "block_size must be a power of two in [8, 256], got 48"),
    ({"head_dim": 4}, "head_dim must be a power of two in [8, 256], got 4"),
    ({"rows": "4"}, "rows must be an integer, got '4'"),
    ({"bitwidths": (0, 2, 4)}, "bitwidths must contain 8"),
    ({"bitwidths": (0, 2, 4, 8), "cols": 8, "block_size": 16}, "must be a multiple of rows (4) and of cols x "
                                                                 "products per cycle (32)"),
    ({"bitwidths": (0, 4)}, "bitwidths must contain 8"),
    ({"bitwidths": (0, 3, 8)}, "bitwidths must be a subset of {0, 2, 4, 8}, got 3"),
    ({"rows": 64, "cols": 2, "head_dim": 32}, "head_dim 32 must be a multiple of rows 64"),
    ({"cols": 8, "block_size": 8}, "block_size 8 does not tile the array"),
    ({"acc_width": 21}, "acc_width must be in [22, 64] for dot products of length 64"),
    ({"max_kept_keys": 100}, "max_kept_keys must be a multiple of block_size 64 in [64, max_seq_len 32768], got 100"),
    ({"max_seq_len": 1024, "kv_cache_blocks": 17}, "kv_cache_blocks must be in [1, max_blocks 16], got 17"),
    ({"kv_cache_blocks": 0}, "kv_cache_blocks must be in [1, max_blocks 512], got 0"),
    ({"max_seq_len": 128, "max_kept_keys": 192}, "max_kept_keys must be a multiple of block_size 64 in [64, "
                                                  "max_seq_len 128], got 192"),
    ({"pe_stages": 3}, "pe_stages must be in [0, 2], got 3"),
    ({"pe_stages": 1.5}, "pe_stages must be an integer, got 1.5"),
])
def test_bad_parameter_is_one_line(kwargs, message):
    with pytest.raises(ParoError) as info:
        AcceleratorConfig(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_acc_width_is_the_proven_minimum():
    # depth x (-128 x -128) must fit: 64 x 2**14 = 2**20 needs 22 signed bits, 2**20 - 1 would need 21.
    assert min_acc_width(64) == 22
    assert min_acc_width(256) == 24
    assert AcceleratorConfig().acc_width == 22
    assert AcceleratorConfig(block_size=256, rows=4, cols=4).acc_width == 24
    for depth in (8, 64, 256):
        width = min_acc_width(depth)
        assert depth << 14 <= (1 << (width - 1)) - 1 < depth << 15


def test_json_round_trip_and_unknown_field():
    config = AcceleratorConfig(rows=8, cols=4, bitwidths=[8, 0, 4, 4])
    assert config.bitwidths == (0, 4, 8)
    assert AcceleratorConfig.from_json(config.to_json()) == config
    with pytest.raises(ParoError, match="unknown configuration field 'depth'"):
        AcceleratorConfig.from_dict({"depth": 3})


def test_modes_follow_bitwidths():
    assert AcceleratorConfig().modes == (PEMode.INT8, PEMode.INT4, PEMode.UINT4)
    assert AcceleratorConfig(bitwidths=(0, 8)).modes == (PEMode.INT8,)
    two = AcceleratorConfig(bitwidths=(0, 2, 8))
    assert two.modes == (PEMode.INT8, PEMode.INT2, PEMode.UINT2)
    assert two.max_products_per_cycle == 4 and two.pe_accumulators == 4
    assert AcceleratorConfig().pe_accumulators == 2 and AcceleratorConfig(bitwidths=(0, 8)).pe_accumulators == 1
    assert PEMode.for_block(2, "qk") is PEMode.INT2 and PEMode.for_block(2, "pv") is PEMode.UINT2
    assert [m.products_per_cycle for m in PEMode] == [1, 2, 2, 4, 4]
    assert PEMode.for_block(4, "qk") is PEMode.INT4
    assert PEMode.for_block(4, "pv") is PEMode.UINT4
    assert PEMode.for_block(8, "pv") is PEMode.INT8
    with pytest.raises(ParoError, match="0-bit blocks are skipped"):
        PEMode.for_block(0, "qk")


def test_max_kept_keys_defaults_to_every_key():
    assert AcceleratorConfig(max_seq_len=1024).max_kept_keys == 1024
    config = AcceleratorConfig(max_seq_len=1024, max_kept_keys=256)
    assert config.max_kept_blocks == 4 and config.derived()["max_kept_blocks"] == 4
    assert AcceleratorConfig.from_dict(config.to_dict()) == config
