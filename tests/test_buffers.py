"""The engine's banked buffers (hw/row_buffer.py, hw/score_buffer.py) against their golden twins, and their
placement rules: every access the engine makes in one cycle falls in distinct banks."""

import dataclasses
import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import PACKING, SCORE_WIDTH, AcceleratorConfig
from paro.errors import ParoError
from paro.hw.row_buffer import RowBuffer
from paro.hw.score_buffer import ScoreBuffer
from paro.sw import golden
from paro.sw.contract import row_buffer_geometry, row_buffer_place, score_buffer_geometry, score_buffer_place

SEED = 20261129
CONFIG = AcceleratorConfig(rows=4, cols=2, block_size=16, head_dim=16, max_seq_len=128, max_kept_keys=48,
                           kv_cache_blocks=3, axi_data_bits=64)
CONFIG2 = dataclasses.replace(CONFIG, bitwidths=(0, 2, 4, 8))
#: rows > lanes (more score banks than lanes); row buffers with more readers than a row has bytes
WIDE = AcceleratorConfig(rows=8, cols=2, block_size=16, head_dim=16, max_seq_len=128, max_kept_keys=32,
                         axi_data_bits=128)


def run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("config,rows,readers", [(CONFIG, 48, 4), (CONFIG2, 48, 8), (CONFIG, 32, 4),
                                                 (WIDE, 32, 16), (WIDE, 64, 32), (CONFIG, 16, 1)],
                         ids=["k-4", "k-8", "q-4", "16-readers", "32-readers", "1-reader"])
def test_placement_is_conflict_free(config, rows, readers):
    """A row's words fall in distinct banks (one write a cycle); so do ``readers`` rows of one aligned group
    at one word index (one read a cycle); and no two words share a bank address."""
    geometry = row_buffer_geometry(config, rows, readers)
    words, banks = geometry["words_per_row"], geometry["banks"]
    seen = set()
    for row in range(rows):
        places = [row_buffer_place(row, j, geometry) for j in range(words)]
        assert len({bank for bank, _ in places}) == words
        assert all(0 <= address < geometry["bank_entries"] for _, address in places)
        seen.update(places)
    assert len(seen) == rows * words
    for base, j in itertools.product(range(0, rows, banks), range(words)):
        assert len({row_buffer_place(base + n, j, geometry)[0] for n in range(banks)}) == banks


@pytest.mark.parametrize("config", [CONFIG, CONFIG2, WIDE], ids=["048", "0248", "rows-8"])
def test_score_placement_is_conflict_free(config):
    B, R, lanes = config.block_size, config.rows, config.engine_lanes
    banks = score_buffer_geometry(config)["banks"]
    assert banks == max(R, lanes)
    for key in (0, config.max_kept_keys - 1):
        for group in range(B // R):
            assert len({score_buffer_place(group * R + r, key, config)[0] for r in range(R)}) == R
        for bits in config.computed_bitwidths:                      # pass B: a tile's queries, one per lane
            width = config.cols << PACKING[bits]
            for first in range(0, B, width):
                assert len({score_buffer_place(first + n, key, config)[0] for n in range(width)}) == width
    places = {score_buffer_place(q, k, config) for q in range(B) for k in range(config.max_kept_keys)}
    assert len(places) == B * config.max_kept_keys


@pytest.mark.parametrize("config,rows,readers", [(CONFIG, 48, 4), (CONFIG2, 48, 8), (CONFIG, 32, 4),
                                                 (WIDE, 32, 16), (WIDE, 64, 32), (CONFIG, 16, 1)],
                         ids=["k-4", "k-8", "q-4", "16-readers", "32-readers", "1-reader"])
def test_row_buffer_reads_like_its_twin(config, rows, readers):
    """Rows written in random order with gaps; then reads at every word of random bases, with held reads
    (``rd_en`` low) in between: every reader whose row is in the base's group gets the golden word."""
    rng = np.random.default_rng(SEED + readers)
    print(f"seed {SEED + readers}")
    geometry = row_buffer_geometry(config, rows, readers)
    wb, words = geometry["word_bytes"], geometry["words_per_row"]
    content = rng.integers(-128, 128, (rows, config.head_dim))
    dut = RowBuffer(config, rows, readers)

    async def testbench(ctx):
        for row in rng.permutation(rows):
            ctx.set(dut.wr_en, 1)
            ctx.set(dut.wr_addr, int(row))
            ctx.set(dut.wr_data, content[row].tolist())
            await ctx.tick()
            if rng.random() < 0.3:
                ctx.set(dut.wr_en, 0)
                await ctx.tick()
        ctx.set(dut.wr_en, 0)
        checked = 0
        for _ in range(60):
            base, word = int(rng.integers(0, rows - readers + 1)), int(rng.integers(0, words))
            ctx.set(dut.rd_en, 1)
            ctx.set(dut.rd_row, base)
            ctx.set(dut.rd_word, word)
            await ctx.tick()
            ctx.set(dut.rd_en, 0)
            ctx.set(dut.rd_row, int(rng.integers(0, rows)))            # not read: the data holds
            for hold in range(1 + int(rng.integers(0, 2))):
                got = [ctx.get(dut.rd_data[n]) for n in range(readers)]
                want = golden.row_buffer(content, base, word, readers, wb)
                for n in range(readers):
                    if want[n] is not None:
                        assert list(got[n]) == want[n], (base, word, n, hold)
                        checked += 1
                await ctx.tick()
        assert checked >= 60

    run(dut, testbench)


@pytest.mark.parametrize("config", [CONFIG, CONFIG2, WIDE], ids=["048", "0248", "rows-8"])
def test_score_buffer_reads_like_its_twin(config):
    """Every score written as pass A does (``rows`` queries of a group, in a random order of groups and keys);
    then pass B's reads for every packing at random keys: each lane of the tile gets the golden score."""
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    B, R, keys, lanes = config.block_size, config.rows, config.max_kept_keys, config.engine_lanes
    scores = rng.integers(-(1 << (SCORE_WIDTH - 1)), 1 << (SCORE_WIDTH - 1), (B, keys))
    banks = score_buffer_geometry(config)["banks"]
    dut = ScoreBuffer(config)

    async def testbench(ctx):
        for group, key in rng.permutation(list(itertools.product(range(B // R), range(keys)))):
            ctx.set(dut.wr_en, 1)
            ctx.set(dut.wr_group, int(group))
            ctx.set(dut.wr_key, int(key))
            ctx.set(dut.wr_data, [int(v) for v in scores[group * R:(group + 1) * R, key]])
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        for bits in config.computed_bitwidths:
            width = config.cols << PACKING[bits]
            for _ in range(20):
                query, key = int(rng.integers(0, B // width)) * width, int(rng.integers(0, keys))
                ctx.set(dut.rd_en, 1)
                ctx.set(dut.rd_query, query)
                ctx.set(dut.rd_key, key)
                await ctx.tick()
                ctx.set(dut.rd_en, 0)
                ctx.set(dut.rd_key, (key + 1) % keys)                  # not read: the data holds
                for _ in range(2):
                    want = golden.score_buffer(scores, query, key, lanes, banks)
                    assert all(want[n] is not None for n in range(width))
                    assert [ctx.get(dut.rd_data[n]) for n in range(width)] == want[:width], (bits, query, key)
                    await ctx.tick()

    run(dut, testbench)


def test_row_buffer_refuses_bad_parameters():
    with pytest.raises(ParoError, match="readers must be a power of two"):
        RowBuffer(CONFIG, 48, 3)
    with pytest.raises(ParoError, match="cannot have 8 banks"):
        RowBuffer(CONFIG, 36, 8)
