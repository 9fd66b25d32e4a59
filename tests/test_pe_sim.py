"""Amaranth-simulator unit tests of the PE (hw/pe.py) against sw.golden.pe_step, one behaviour each."""

import random

import pytest
from amaranth.sim import Simulator

from paro.hw.pe import ProcessingElement
from paro.config import AcceleratorConfig, PEMode
from paro.errors import ParoError
from paro.sw.golden import operand_range, pack_operand_b, pe_step

SEED = 20261125


def run(pe, testbench):
    sim = Simulator(pe)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


async def apply(ctx, pe, a, b_word, mode, valid=True, last=False, en=True):
    ctx.set(pe.en, en)
    ctx.set(pe.a, a)
    ctx.set(pe.b.as_value(), b_word)
    ctx.set(pe.ctl, {"valid": valid, "last": last, "mode": mode})
    await ctx.tick()


def result(ctx, pe):
    value = ctx.get(pe.result)
    return (value[0], value[1])


def word(values, mode):
    return int(pack_operand_b([values] if mode is PEMode.INT8 else values, mode)[0])


def random_beat(rng, mode):
    low, high = operand_range(mode)
    b = rng.randint(low, high) if mode is PEMode.INT8 else [rng.randint(low, high) for _ in range(2)]
    return rng.randint(-128, 127), word(b, mode)


def test_random_tiles_match_golden():
    print(f"seed {SEED}")
    config = AcceleratorConfig()
    pe = ProcessingElement(config)
    rng = random.Random(SEED)

    async def testbench(ctx):
        acc, fresh, expected = (0, 0), True, (0, 0)
        for _ in range(60):
            mode = rng.choice(config.modes)
            length = rng.randint(1, 12)
            for k in range(length):
                a, b = random_beat(rng, mode)
                await apply(ctx, pe, a, b, mode, last=k == length - 1)
                acc = pe_step(acc, a, b, mode, fresh, config.acc_width)
                fresh = k == length - 1
            expected = acc
            assert result(ctx, pe) == expected
    run(pe, testbench)


def test_mode_switch_no_bubble():
    """One-beat tiles alternating INT8 / INT4 / UINT4 every cycle: each result is right the next cycle."""
    config = AcceleratorConfig()
    pe = ProcessingElement(config)
    rng = random.Random(SEED)

    async def testbench(ctx):
        for n in range(30):
            mode = config.modes[n % 3]
            a, b = random_beat(rng, mode)
            await apply(ctx, pe, a, b, mode, last=True)
            assert result(ctx, pe) == pe_step((0, 0), a, b, mode, True, config.acc_width)
    run(pe, testbench)


def test_freeze_and_bubble_hold_state():
    config = AcceleratorConfig()
    pe = ProcessingElement(config)

    async def testbench(ctx):
        await apply(ctx, pe, 3, word(5, PEMode.INT8), PEMode.INT8)                          # acc = 15
        await apply(ctx, pe, 100, word(100, PEMode.INT8), PEMode.INT8, last=True, en=False)  # frozen
        assert ctx.get(pe.a_out) == 3
        await apply(ctx, pe, 100, word(100, PEMode.INT8), PEMode.INT8, valid=False, last=True)  # bubble
        assert ctx.get(pe.a_out) == 100
        await apply(ctx, pe, 2, word(-7, PEMode.INT8), PEMode.INT8, last=True)
        assert result(ctx, pe) == (15 - 14, 0)
    run(pe, testbench)


def test_int8_only_pe_is_plain_multiplier():
    config = AcceleratorConfig(bitwidths=(0, 8))
    pe = ProcessingElement(config)

    async def testbench(ctx):
        for a, b in [(-128, -128), (127, -128), (-1, 1), (77, -33)]:
            await apply(ctx, pe, a, word(b, PEMode.INT8), PEMode.INT8, last=True)
            assert result(ctx, pe) == (a * b, 0)
    run(pe, testbench)


def test_pe_needs_a_config():
    with pytest.raises(ParoError, match="needs an AcceleratorConfig"):
        ProcessingElement({"rows": 4})
