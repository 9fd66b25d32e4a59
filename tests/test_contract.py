"""The engine's register and memory contract (``sw/contract.py``): layer memory map, descriptor rules with
one-line errors, layer files."""

import json

import numpy as np
import pytest

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.sw import golden
from paro.sw.contract import (ADDRESS_FIELDS, ERRORS, REGION_ALIGN, TABLE_FIELDS, EngineLayer, EngineProgram,
                              bitmap_stride, check_layer, descriptor_fields, descriptor_stride, layer_memory,
                              layer_memory_map,
                              load_layer, region_bytes, save_layer)

CONFIG = AcceleratorConfig(rows=4, cols=4, block_size=16, head_dim=32, max_seq_len=128, max_kept_keys=64,
                           max_heads=4)
SEED = 20261128


def _program(addresses, n_blocks=5, **fields):
    rng = np.random.default_rng(SEED)
    tokens = n_blocks * CONFIG.block_size
    bitmap = np.zeros((n_blocks, n_blocks), dtype=np.uint8)
    bitmap[:, 0] = 4
    bitmap[np.arange(n_blocks), np.arange(n_blocks)] = 8                 # at most 2 kept blocks (32 keys) a row
    values = {**addresses, "N_TOKENS": tokens - 3, "N_BLOCKS": n_blocks, "SCORE_SHIFT": 20,
              "FINAL_SHIFT": 30, "ROW_FIRST": 0, "ROW_COUNT": n_blocks, **fields}
    tables = {name: rng.integers(1, 1 << 15, n_blocks) for name in TABLE_FIELDS}
    arrays = [rng.integers(-128, 128, (tokens, CONFIG.head_dim)) for _ in range(3)]
    return EngineProgram(values, tables, bitmap, *arrays, np.zeros((tokens, CONFIG.head_dim), dtype=np.int64), 9)


def _layer(heads=2, **fields):
    desc_addr, maps = layer_memory_map(CONFIG, [5] * heads)
    return EngineLayer(desc_addr, [_program(addresses, **(fields if n == heads - 1 else {}))
                                   for n, addresses in enumerate(maps)])


def test_layer_memory_map_places_aligned_disjoint_regions():
    layer = _layer(3)
    check_layer(CONFIG, layer)
    spans = [(layer.desc_addr, layer.desc_addr + 3 * descriptor_stride(CONFIG))]
    spans += [(p.descriptor[n], p.descriptor[n] + region_bytes(CONFIG, n, 5))
              for p in layer.heads for n in ADDRESS_FIELDS]
    spans.sort()
    assert all(low % REGION_ALIGN == 0 for low, _ in spans)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))
    assert region_bytes(CONFIG, "O_ADDR", 5) == 2 * region_bytes(CONFIG, "Q_ADDR", 5) == 2 * 5 * 16 * 32
    # Memory holds the descriptors (word n = field n), padded bitmap rows and little-endian table records.
    memory = dict(layer_memory(CONFIG, layer))
    head = layer.heads[1]
    words = np.frombuffer(memory[layer.desc_addr + descriptor_stride(CONFIG)][:48], dtype="<u4")
    assert words.tolist() == [head.descriptor[name] for name in ("Q_ADDR", "K_ADDR", "V_ADDR", "O_ADDR",
                              "BITMAP_ADDR", "TABLE_ADDR", "N_TOKENS", "N_BLOCKS", "SCORE_SHIFT", "FINAL_SHIFT",
                              "ROW_FIRST", "ROW_COUNT")]
    rows = np.frombuffer(memory[head.descriptor["BITMAP_ADDR"]], dtype=np.uint8).reshape(5, bitmap_stride(CONFIG, 5))
    assert np.array_equal(rows[:, :5], head.bitmap) and not rows[:, 5:].any()
    table = memory[head.descriptor["TABLE_ADDR"]]
    assert golden.block_table(table, 3) == {name: int(head.tables[name][3]) for name in TABLE_FIELDS}


@pytest.mark.parametrize("fields,message", [
    ({"N_TOKENS": 0}, "head 1: descriptor N_TOKENS = 0 does not fall in the last of N_BLOCKS = 5 blocks of 16 tokens "
                      "(a head with zero tokens)"),
    ({"ROW_FIRST": 3, "ROW_COUNT": 3}, "head 1: descriptor ROW_FIRST = 3 and ROW_COUNT = 3 do not select rows within "
                                       "N_BLOCKS = 5"),
    ({"K_ADDR": 0x3010}, "head 1: descriptor K_ADDR = 0x3010 is not a multiple of 4096 bytes; align the region "
                         "to 4096"),
    ({"O_ADDR": 0xFFFFF000}, "head 1: descriptor O_ADDR = 0xfffff000: the region's 5120 bytes run past the 32-bit "
                             "address space"),
])
def test_bad_descriptors_are_one_line_and_the_engine_code_agrees(fields, message):
    layer = _layer(**fields)
    with pytest.raises(ParoError) as info:
        check_layer(CONFIG, layer)
    assert str(info.value) == message
    code = golden.descriptor_check(CONFIG, layer.heads[1].descriptor, layer.desc_addr, 2)
    assert ERRORS[code] in ("N_TOKENS", "ROWS", "ALIGN", "SPACE")


def test_outputs_that_overlap_are_named():
    layer = _layer()
    layer.heads[1].descriptor["O_ADDR"] = layer.heads[1].descriptor["K_ADDR"]
    with pytest.raises(ParoError, match=r"^head 1: descriptor the output region \[0x[0-9a-f]+, 0x[0-9a-f]+\) "
                                        r"overlaps K_ADDR's"):
        check_layer(CONFIG, layer)
    layer = _layer()
    layer.heads[1].descriptor["O_ADDR"] = layer.heads[0].descriptor["Q_ADDR"]        # another head's input
    with pytest.raises(ParoError, match=r"^head 1: the output region .* overlaps head 0's Q_ADDR region"):
        check_layer(CONFIG, layer)


def test_too_many_heads_for_one_start():
    with pytest.raises(ParoError) as info:
        check_layer(CONFIG, _layer(5))
    assert str(info.value) == ("a layer of 5 heads does not fit one start: N_HEADS must be in [1, 4] (build with "
                               "--max-heads >= 5)")


def test_row_beyond_the_score_buffer_is_named():
    layer = _layer()
    layer.heads[0].bitmap[3] = 8                                # 5 blocks = 80 keys > max_kept_keys 64
    with pytest.raises(ParoError) as info:
        check_layer(CONFIG, layer)
    assert str(info.value) == ("head 0: bitmap row 3 keeps 5 blocks (80 keys), more than the score buffer holds "
                               "(max_kept_keys 64); build with --max-kept-keys >= 80")


def test_layer_file_round_trip_and_old_version(tmp_path):
    path = tmp_path / "layer.npz"
    layer = _layer()
    save_layer(CONFIG, layer, path)
    config, loaded = load_layer(path)
    assert config == CONFIG and loaded.desc_addr == layer.desc_addr
    # fields a descriptor left out come back at their defaults (speculation off)
    assert [p.descriptor for p in loaded.heads] == [descriptor_fields(p.descriptor) for p in layer.heads]
    assert loaded.heads[0].descriptor["SPEC"] == 0 and loaded.heads[0].speculated is None
    assert np.array_equal(loaded.heads[1].bitmap, layer.heads[1].bitmap)
    assert np.array_equal(loaded.heads[1].k8, layer.heads[1].k8)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header["version"] = 2
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ParoError) as info:
        load_layer(path)
    assert "field 'header.version' must be 3, got 2" in str(info.value)
