"""SimPicker's pooling unit (``hw/pooling.py``) against its golden twin (:func:`paro.sw.golden.pooled_codes`)
in the Amaranth simulator: random and extreme rows, ties of the rounding, gaps on ``i``, stalls on ``o``."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.hw.pooling import PoolingUnit
from paro.sw import golden

SEED = 20261129


def run_blocks(config, rows, rng, gap=0.0, stall=0.0):
    dut = PoolingUnit(config)
    blocks = len(rows) // config.block_size
    got = []

    async def testbench(ctx):
        sent = 0
        for _ in range(20 * len(rows) + 100):
            offer = sent < len(rows) and rng.random() >= gap
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(dut.i.payload, rows[sent].tolist())
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            taken = offer and ctx.get(dut.i.ready)
            if ready and ctx.get(dut.o.valid):
                pooled = ctx.get(dut.o.payload)
                got.append([pooled[n] for n in range(config.head_dim)])
            await ctx.tick()
            sent += taken
            if len(got) == blocks:
                return

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return np.array(got)


@pytest.mark.parametrize("block_size,gap,stall", [(16, 0.0, 0.0), (8, 0.3, 0.4), (32, 0.2, 0.2)])
def test_pooling_unit_matches_the_golden_codes(block_size, gap, stall):
    config = AcceleratorConfig(rows=2, cols=2, block_size=block_size, head_dim=16, max_seq_len=256)
    rng = np.random.default_rng(SEED + block_size)
    rows = rng.integers(-128, 128, (6 * block_size, 16))
    rows[:block_size] = -128                                   # the extremes
    rows[block_size:2 * block_size] = 127
    rows[2 * block_size:3 * block_size, 0] = [1] * (block_size // 2) + [0] * (block_size // 2)  # a tie: +0.5
    rows[2 * block_size:3 * block_size, 1] = [-1] * (block_size // 2) + [0] * (block_size // 2)  # -0.5
    got = run_blocks(config, rows, rng, gap, stall)
    want = golden.pooled_codes(rows, block_size)
    assert np.array_equal(got, want)
    assert want[0, 0] == -128 and want[1, 0] == 127 and want[2, 0] == 1 and want[2, 1] == 0   # ties up
