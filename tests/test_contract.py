"""The engine's register and memory contract (``sw/contract.py``): memory map, checks with one-line errors,
program files."""

import json

import numpy as np
import pytest

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.sw.contract import (ADDRESS_REGISTERS, REGION_ALIGN, EngineProgram, check_program, load_program,
                              memory_map, region_bytes, save_program)

CONFIG = AcceleratorConfig(rows=4, cols=4, block_size=16, head_dim=32, max_seq_len=128, max_kept_keys=64)
SEED = 20261128


def _program(n_blocks=5, **registers):
    rng = np.random.default_rng(SEED)
    tokens = n_blocks * CONFIG.block_size
    bitmap = np.zeros((n_blocks, n_blocks), dtype=np.uint8)
    bitmap[:, 0] = 4
    bitmap[np.arange(n_blocks), np.arange(n_blocks)] = 8                 # at most 2 kept blocks (32 keys) a row
    values = {**memory_map(CONFIG, n_blocks), "N_TOKENS": tokens - 3, "N_BLOCKS": n_blocks, "SCORE_SHIFT": 20,
              "FINAL_SHIFT": 30, "ROW_FIRST": 0, "ROW_COUNT": n_blocks, **registers}
    tables = {name: rng.integers(1, 1 << 15, n_blocks) for name in ("CQ", "CK", "CV8", "CV4")}
    arrays = [rng.integers(-128, 128, (tokens, CONFIG.head_dim)) for _ in range(3)]
    return EngineProgram(values, tables, bitmap, *arrays, np.zeros((tokens, CONFIG.head_dim), dtype=np.int64), 9)


def test_memory_map_places_aligned_disjoint_regions():
    addresses = memory_map(CONFIG, 5)
    spans = sorted((addresses[n], addresses[n] + region_bytes(CONFIG, n, 5)) for n in ADDRESS_REGISTERS)
    assert all(low % REGION_ALIGN == 0 for low, _ in spans)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))
    assert region_bytes(CONFIG, "O_ADDR", 5) == 2 * region_bytes(CONFIG, "Q_ADDR", 5) == 2 * 5 * 16 * 32
    check_program(CONFIG, _program())


@pytest.mark.parametrize("registers,message", [
    ({"ROW_FIRST": 3, "ROW_COUNT": 3}, "registers ROW_FIRST = 3 and ROW_COUNT = 3 reach past N_BLOCKS = 5"),
    ({"K_ADDR": 0x3010}, "register K_ADDR = 0x3010 is not a multiple of 4096 bytes; align the region to 4096"),
    ({"O_ADDR": 0xFFFFF000}, "register O_ADDR = 0xfffff000: the region's 5120 bytes run past the 32-bit address space"),
    ({"O_ADDR": 0x2000}, "the output region [0x2000, 0x3400) overlaps K_ADDR's [0x2000, 0x2a00); move O_ADDR"),
])
def test_bad_registers_are_one_line(registers, message):
    with pytest.raises(ParoError) as info:
        check_program(CONFIG, _program(**registers))
    assert str(info.value) == message


def test_row_beyond_the_score_buffer_is_named():
    prog = _program()
    prog.bitmap[3] = 8                                          # 5 blocks = 80 keys > max_kept_keys 64
    with pytest.raises(ParoError) as info:
        check_program(CONFIG, prog)
    assert str(info.value) == ("bitmap row 3 keeps 5 blocks (80 keys), more than the score buffer holds "
                               "(max_kept_keys 64); build with --max-kept-keys >= 80")


def test_program_file_round_trip_and_old_version(tmp_path):
    path = tmp_path / "prog.npz"
    prog = _program()
    save_program(CONFIG, prog, path)
    config, loaded = load_program(path)
    assert config == CONFIG and loaded.registers == prog.registers
    assert np.array_equal(loaded.bitmap, prog.bitmap) and np.array_equal(loaded.k8, prog.k8)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header["version"] = 1
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ParoError) as info:
        load_program(path)
    assert "field 'header.version' must be 2, got 1" in str(info.value)
