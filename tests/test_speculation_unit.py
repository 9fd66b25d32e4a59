"""SimPicker's speculation unit (``hw/speculation.py``) against its golden twins
(:func:`paro.sw.golden.speculation_masses`, :func:`paro.sw.golden.speculation_classes`) in the Amaranth
simulator: random rows with ties, dropped and empty blocks, random gaps on ``i`` and stalls on ``o``."""

import numpy as np
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.hw.speculation import SpeculationUnit
from paro.sw import golden

SEED = 20261129
CONFIG = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=256)


def random_rows(rng, config, count):
    """Rows of ``(x, allowed, keys, important, negligible)``: scores in a few log2 units (ties likely), blocks
    a plan drops, a partial and an empty last block, thresholds from the whole range."""
    rows = []
    one = 1 << golden.SPEC_FRAC_BITS
    for _ in range(count):
        n = int(rng.integers(1, config.max_blocks + 1))
        spread = int(rng.choice([4, 64, 4096, 1 << 14]))
        x = rng.integers(-spread, spread, n) * int(rng.choice([1, 7])) + int(rng.integers(-10**6, 10**6))
        allowed = rng.random(n) < 0.8
        keys = np.full(n, config.block_size)
        keys[-1] = int(rng.integers(0, config.block_size + 1))
        negligible = int(rng.integers(0, one // 4))
        important = int(rng.integers(negligible + 1, one + 1))
        rows.append((x, allowed, keys, important, negligible))
    return rows


def golden_classes(config, row):
    x, allowed, keys, important, negligible = row
    masses = golden.speculation_masses(x[None, :], keys, config, allowed[None, :])
    return golden.speculation_classes(masses, important, negligible)[0].tolist()


def run_rows(config, rows, rng, gap=0.0, stall=0.0):
    """Feed each row (its thresholds held), collect the classes; return (classes per row, cycles per row)."""
    dut = SpeculationUnit(config)
    got, cycles = [], []

    async def testbench(ctx):
        cycle = 0
        for x, allowed, keys, important, negligible in rows:
            ctx.set(dut.important, important)
            ctx.set(dut.negligible, negligible)
            start, sent, classes = cycle, 0, []
            while len(classes) < len(x):
                offer = sent < len(x) and rng.random() >= gap
                ctx.set(dut.i.valid, offer)
                if offer:
                    ctx.set(dut.i.payload, {"x": int(x[sent]), "allowed": bool(allowed[sent]), "keys": int(keys[sent]),
                                            "last": sent == len(x) - 1})
                ready = rng.random() >= stall
                ctx.set(dut.o.ready, ready)
                taken = offer and ctx.get(dut.i.ready)
                if ready and ctx.get(dut.o.valid):
                    beat = ctx.get(dut.o.payload)
                    classes.append(int(beat.cls))
                    assert bool(beat.last) == (len(classes) == len(x))
                await ctx.tick()
                cycle += 1
                sent += taken
                assert cycle - start < 10 * (len(x) + 4) ** 2, "row not classed in time"
            got.append(classes)
            cycles.append(cycle - start)
        ctx.set(dut.i.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got, cycles


def test_speculation_unit_matches_the_golden_classes():
    rng = np.random.default_rng(SEED)
    rows = random_rows(rng, CONFIG, 40)
    got, cycles = run_rows(CONFIG, rows, rng)
    for n, (row, classes) in enumerate(zip(rows, got)):
        assert classes == golden_classes(CONFIG, row), f"row {n} (seed {SEED})"
    for row, spent in zip(rows, cycles):                     # the documented cost without stalls
        count = len(row[0])
        assert spent == count * count + 5 * count, (count, spent)


def test_speculation_unit_under_gaps_and_back_pressure():
    rng = np.random.default_rng(SEED + 1)
    rows = random_rows(rng, CONFIG, 25)
    got, _ = run_rows(CONFIG, rows, rng, gap=0.3, stall=0.4)
    assert got == [golden_classes(CONFIG, row) for row in rows]


def test_speculation_unit_row_of_ties_and_a_row_without_live_blocks():
    n = CONFIG.max_blocks
    one = 1 << golden.SPEC_FRAC_BITS
    tied = (np.full(n, 5000), np.ones(n, dtype=bool), np.full(n, CONFIG.block_size), one // 2, one // 8)
    dead = (np.arange(n) * 100, np.zeros(n, dtype=bool), np.full(n, CONFIG.block_size), one // 2, 0)
    got, _ = run_rows(CONFIG, [tied, dead], np.random.default_rng(SEED))
    assert got[0] == golden_classes(CONFIG, tied)
    assert got[0][:n // 2] == [golden.SPEC_FULL] * (n // 2)  # equal masses: the lower half reaches 1/2
    assert got[1] == [golden.SPEC_SKIP] * n
