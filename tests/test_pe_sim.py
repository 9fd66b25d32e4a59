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
    return tuple(value[k] for k in range(len(value)))


def word(values, mode):
    return int(pack_operand_b([values] if mode is PEMode.INT8 else values, mode)[0])


def random_beat(rng, mode):
    low, high = operand_range(mode)
    b = rng.randint(low, high) if mode is PEMode.INT8 else [rng.randint(low, high)
                                                             for _ in range(mode.products_per_cycle)]
    return rng.randint(-128, 127), word(b, mode)


ALL_BITS = (0, 2, 4, 8)


@pytest.mark.parametrize("bitwidths", [(0, 4, 8), ALL_BITS, (0, 2, 8)])
def test_random_tiles_match_golden(bitwidths):
    print(f"seed {SEED}")
    config = AcceleratorConfig(bitwidths=bitwidths)
    pe = ProcessingElement(config)
    rng = random.Random(SEED)

    async def testbench(ctx):
        acc = expected = (0,) * config.pe_accumulators
        fresh = True
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


@pytest.mark.parametrize("bitwidths", [(0, 4, 8), ALL_BITS])
def test_mode_switch_no_bubble(bitwidths):
    """One-beat tiles cycling through every mode: each result is right the next cycle."""
    config = AcceleratorConfig(bitwidths=bitwidths)
    pe = ProcessingElement(config)
    rng = random.Random(SEED)
    zero = (0,) * config.pe_accumulators

    async def testbench(ctx):
        for n in range(40):
            mode = config.modes[n % len(config.modes)]
            a, b = random_beat(rng, mode)
            await apply(ctx, pe, a, b, mode, last=True)
            assert result(ctx, pe) == pe_step(zero, a, b, mode, True, config.acc_width)
    run(pe, testbench)


def test_two_bit_modes_known_products():
    """Hand-checked: the four crumbs of one word, signed and unsigned, each into its own accumulator; and
    the crumb datapath's 8-bit and 4-bit products equal the plain products."""
    config = AcceleratorConfig(bitwidths=ALL_BITS)
    pe = ProcessingElement(config)

    async def testbench(ctx):
        await apply(ctx, pe, -7, word([-2, 1, 0, -1], PEMode.INT2), PEMode.INT2, last=True)
        assert result(ctx, pe) == (14, -7, 0, 7)
        await apply(ctx, pe, -7, word([3, 1, 0, 2], PEMode.UINT2), PEMode.UINT2, last=True)
        assert result(ctx, pe) == (-21, -7, 0, -14)
        await apply(ctx, pe, 127, word([-8, 7], PEMode.INT4), PEMode.INT4, last=True)
        assert result(ctx, pe) == (-1016, 889, 0, 0)
        await apply(ctx, pe, -128, word(-128, PEMode.INT8), PEMode.INT8, last=True)
        assert result(ctx, pe) == (16384, 0, 0, 0)
        # Two beats of one 2-bit tile accumulate per crumb.
        await apply(ctx, pe, 5, word([1, 1, -2, 0], PEMode.INT2), PEMode.INT2)
        await apply(ctx, pe, 3, word([-2, 1, -2, 1], PEMode.INT2), PEMode.INT2, last=True)
        assert result(ctx, pe) == (-1, 8, -16, 3)
    run(pe, testbench)


def test_golden_refuses_two_bit_on_a_two_accumulator_pe():
    with pytest.raises(ParoError, match="PE mode INT2 needs 4 accumulators, the PE has 2"):
        pe_step((0, 0), 1, 0, PEMode.INT2, True, 22)


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
            assert result(ctx, pe) == (a * b,)
    run(pe, testbench)


def test_pe_needs_a_config():
    with pytest.raises(ParoError, match="needs an AcceleratorConfig"):
        ProcessingElement({"rows": 4})


@pytest.mark.parametrize("bitwidths, k4_cut, k2_cut, stages", [((0, 4, 8), "leading-zero", "block", 0),
                                                            ((0, 4, 8), "leading-zero", "block", 2),
                                                            (ALL_BITS, "leading-zero", "block", 1),
                                                            (ALL_BITS, "round", "leading-zero", 0),
                                                            (ALL_BITS, "leading-zero", "leading-zero", 2)])
def test_leading_zero_cuts_shift_products(bitwidths, k4_cut, k2_cut, stages):
    """Builds with leading-zero cuts: INT4 (``k4_cut``) and INT2 (``k2_cut``) beats carry their fields'
    exponents (from :func:`~paro.sw.golden.reduce_int8_lz` of random INT8 K values) and each product is
    shifted by its own; other modes get exponent 0, as the operand feed gives them. Random tiles of every mode
    against the golden PE, pipelined too."""
    from paro.sw.golden import reduce_int8_lz
    print(f"seed {SEED}")
    config = AcceleratorConfig(bitwidths=bitwidths, k4_cut=k4_cut, k2_cut=k2_cut, pe_stages=stages)
    pe = ProcessingElement(config)
    rng = random.Random(SEED)

    async def testbench(ctx):
        acc, fresh, pending = (0,) * config.pe_accumulators, True, []
        for _ in range(60):
            mode = rng.choice(config.modes)
            length = rng.randint(1, 12)
            for k in range(length):
                a, b = random_beat(rng, mode)
                exps = (0,) * config.k_exponents
                if mode in (PEMode.INT4, PEMode.INT2) and config.k_cuts[mode.bits] == "leading-zero":
                    per = mode.products_per_cycle
                    mantissa, exponent = reduce_int8_lz([rng.randint(-128, 127) for _ in range(per)], mode.bits)
                    b = word(list(mantissa), mode)
                    exps = tuple(int(e) for e in exponent) + (0,) * (config.k_exponents - per)
                ctx.set(pe.b_exp, list(exps))
                await apply(ctx, pe, a, b, mode, last=k == length - 1)
                acc = pe_step(acc, a, b, mode, fresh, config.acc_width, b_exp=exps)
                fresh = k == length - 1
            pending.append(acc)
            for _ in range(stages):
                await apply(ctx, pe, 0, 0, PEMode.INT8, valid=False)
            assert result(ctx, pe) == pending[-1]
    run(pe, testbench)
