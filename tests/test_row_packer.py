"""SimPicker's row packer (``hw/row_packer.py``) against its golden twin (:func:`paro.sw.golden.row_packer`)
in the Amaranth simulator: masks from empty to full, group sizes, gaps on ``mask``, stalls on ``o``, and the
rate (one computed row a cycle, blocks without a bubble)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.hw.row_packer import RowPacker
from paro.sw import golden

SEED = 20261129
CONFIG = AcceleratorConfig(rows=4, cols=2, block_size=16, head_dim=16, max_seq_len=256)


def random_masks(rng, count):
    B = CONFIG.block_size
    masks = [np.zeros(B, dtype=bool), np.ones(B, dtype=bool)]
    while len(masks) < count:
        masks.append(rng.random(B) < rng.choice([0.05, 0.3, 0.7, 0.95]))
    return masks


def run_masks(masks, group, rng, gap=0.0, stall=0.0):
    dut = RowPacker(CONFIG, group)
    want = sum(len(golden.row_packer(mask, group)) for mask in masks)
    got, cycles = [], [0]

    async def testbench(ctx):
        sent = 0
        for cycle in range(50 * want + 100):
            offer = sent < len(masks) and rng.random() >= gap
            ctx.set(dut.mask.valid, offer)
            if offer:
                ctx.set(dut.mask.payload, int(sum(1 << n for n, bit in enumerate(masks[sent]) if bit)))
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            taken = offer and ctx.get(dut.mask.ready)
            if ready and ctx.get(dut.o.valid):
                beat = ctx.get(dut.o.payload)
                got.append((int(beat.row), bool(beat.group_end), bool(beat.last), bool(beat.empty)))
            await ctx.tick()
            sent += taken
            if len(got) == want:
                cycles[0] = cycle + 1
                return

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got, cycles[0]


@pytest.mark.parametrize("group", [1, 4, 16])
def test_row_packer_matches_the_golden_groups(group):
    rng = np.random.default_rng(SEED + group)
    masks = random_masks(rng, 30)
    got, cycles = run_masks(masks, group, rng)
    expected = [beat for mask in masks for beat in golden.row_packer(mask, group)]
    assert got == expected
    assert cycles == len(expected) + 1          # one row a cycle, no bubble between blocks


def test_row_packer_under_gaps_and_back_pressure():
    rng = np.random.default_rng(SEED)
    masks = random_masks(rng, 30)
    got, _ = run_masks(masks, 4, rng, gap=0.4, stall=0.4)
    assert got == [beat for mask in masks for beat in golden.row_packer(mask, 4)]


def test_golden_row_packer_packs_scattered_rows_densely():
    mask = np.zeros(16, dtype=bool)
    mask[[1, 6, 7, 12, 15]] = True
    assert golden.row_packer(mask, 4) == [(1, False, False, False), (6, False, False, False),
                                          (7, False, False, False), (12, True, False, False),
                                          (15, True, True, False)]


def test_row_packer_refuses_bad_groups():
    with pytest.raises(ParoError, match="power of two in \\[1, block_size 16\\], got 3"):
        RowPacker(CONFIG, 3)
