"""SimPicker's LUT-based FP x INT multiplier (``hw/lut_multiplier.py``) against its golden twin
(:func:`paro.sw.golden.lut_multiplier`) in the Amaranth simulator, and the golden arithmetic itself."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.hw.lut_multiplier import LutMultiplier
from paro.sw import golden

SEED = 20261129
CONFIG = AcceleratorConfig(lut_lanes=8, lut_mant_bits=7)


def operand_runs(rng, config, runs, max_beats):
    """``runs`` FP operands (numerators through :func:`golden.lut_fp`, plus the extremes) with their INT8
    lanes: ``[((mant, exp), [beat, ...])]``, each beat ``lut_lanes`` values (-128, 127, 0, -1 often)."""
    one = 1 << config.exp_bits
    numerators = np.concatenate([[0, 1, one, one - 1], rng.integers(0, one + 1, runs)])[:runs]
    mants, exps = golden.lut_fp(numerators, config)
    edges = np.array([-128, 127, 0, -1, -8, 8, 15, -16])
    result = []
    for mant, exp in zip(mants.tolist(), exps.tolist()):
        beats = []
        for _ in range(int(rng.integers(1, max_beats + 1))):
            values = rng.integers(-128, 128, config.lut_lanes)
            pick = rng.random(config.lut_lanes) < 0.3
            values[pick] = rng.choice(edges, int(pick.sum()))
            beats.append(values.tolist())
        result.append(((mant, exp), beats))
    return result


def simulate(config, runs, rng, p_gap=0.0, v_gap=0.0, stall=0.0, max_cycles=20000, tables=True):
    """Drive ``runs`` with random gaps on ``p`` and ``v`` and stalls on ``o``; return (beats, cycles) where
    each beat is ``(products, last)`` in the order the unit gave them. ``tables=False``: the baseline."""
    dut = LutMultiplier(config, tables=tables)
    lanes = config.lut_lanes
    flat = [(values, n == len(beats) - 1) for _, beats in runs for n, values in enumerate(beats)]
    got, cycles = [], [0]

    async def testbench(ctx):
        sent_p = sent_v = 0
        for cycle in range(max_cycles):
            offer_p = sent_p < len(runs) and rng.random() >= p_gap
            ctx.set(dut.p.valid, offer_p)
            if offer_p:
                mant, exp = runs[sent_p][0]
                ctx.set(dut.p.payload, {"mant": mant, "exp": exp})
            offer_v = sent_v < len(flat) and rng.random() >= v_gap
            ctx.set(dut.v.valid, offer_v)
            if offer_v:
                values, last = flat[sent_v]
                ctx.set(dut.v.payload, {"v": [{"low": x & 15, "high": x >> 4} for x in values], "last": last})
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            take_p = offer_p and ctx.get(dut.p.ready)
            take_v = offer_v and ctx.get(dut.v.ready)
            if ready and ctx.get(dut.o.valid):
                beat = ctx.get(dut.o.payload)
                got.append(([beat.products[k] for k in range(lanes)], bool(beat.last)))
            await ctx.tick()
            sent_p += take_p
            sent_v += take_v
            if len(got) == len(flat):
                cycles[0] = cycle + 1
                return
        raise AssertionError(f"{len(got)} of {len(flat)} beats after {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got, cycles[0]


def expected_beats(runs):
    return [(golden.lut_multiplier(mant, exp, values).tolist(), n == len(beats) - 1)
            for (mant, exp), beats in runs for n, values in enumerate(beats)]


def test_golden_lut_multiplier_is_the_exact_product_for_every_int8_value():
    rng = np.random.default_rng(SEED)
    v = np.arange(-128, 128)
    for mant in [0, 1, 128, 255] + rng.integers(128, 256, 20).tolist():
        for exp in range(CONFIG.lut_exp_max + 1):
            assert np.array_equal(golden.lut_multiplier(mant, exp, v), (mant << exp) * v), (mant, exp)


def test_golden_lut_fp_rounds_to_mant_bits_plus_one_significant_bits():
    config = CONFIG
    e = np.arange(0, (1 << config.exp_bits) + 1)
    mant, exp = golden.lut_fp(e, config)
    top = config.lut_mant_bits + 1
    value = mant << exp
    assert np.all((mant == 0) == (e == 0))
    normal = e >= (1 << config.lut_mant_bits)
    assert np.all((mant[normal] >> config.lut_mant_bits) == 1) and np.all(mant < (1 << top))
    assert np.all(exp[~normal] == 0)                                          # subnormal: exact, exponent 0
    assert exp.max() == config.lut_exp_max and exp.min() == 0
    assert np.array_equal(value[e < (1 << top)], e[e < (1 << top)])          # small numerators exact
    step = np.int64(1) << exp
    assert np.all(np.abs(value - e) * 2 <= step)                              # half an ulp at most
    tie = (np.arange(1 << top, 1 << (top + 1)) | 0)[1::2]                     # odd: exactly half an ulp
    assert np.array_equal(golden.lut_fp(tie, config)[0] << golden.lut_fp(tie, config)[1], tie + 1)


def test_golden_lut_fp_refuses_values_outside_the_numerator_range():
    with pytest.raises(ParoError, match="numerators"):
        golden.lut_fp([-1], CONFIG)
    with pytest.raises(ParoError, match="numerators"):
        golden.lut_fp([(1 << CONFIG.exp_bits) + 1], CONFIG)


@pytest.mark.parametrize("tables", [True, False], ids=["lut", "plain"])
def test_lut_multiplier_every_int8_value_every_exponent(tables):
    rng = np.random.default_rng(SEED)
    v = np.arange(-128, 128).reshape(-1, CONFIG.lut_lanes).tolist()
    runs = [((mant, exp), v) for exp in range(CONFIG.lut_exp_max + 1)
            for mant in (int(rng.integers(128, 256)), 255)]
    got, _ = simulate(CONFIG, runs, rng, tables=tables)
    assert got == expected_beats(runs)


def test_lut_multiplier_runs_of_one_beat_take_one_cycle_each():
    """The double buffer: the next operand's table builds while the current one serves, so runs of a single
    beat follow each other with no bubble (beats + 2 cycles: build the first table, drain the last beat)."""
    rng = np.random.default_rng(SEED)
    runs = operand_runs(rng, CONFIG, 40, 1)
    got, cycles = simulate(CONFIG, runs, rng)
    assert got == expected_beats(runs)
    assert cycles == len(runs) + 2


@pytest.mark.parametrize("tables", [True, False], ids=["lut", "plain"])
def test_lut_multiplier_random_gaps_and_back_pressure(tables):
    rng = np.random.default_rng(SEED + 1)
    for config in (CONFIG, dataclasses.replace(CONFIG, lut_lanes=4, lut_mant_bits=10),
                   dataclasses.replace(CONFIG, lut_lanes=2, lut_mant_bits=3, exp_bits=12)):
        runs = operand_runs(rng, config, 30, 5)
        got, _ = simulate(config, runs, rng, p_gap=0.3, v_gap=0.3, stall=0.3, tables=tables)
        assert got == expected_beats(runs), f"lut_lanes {config.lut_lanes}, mant bits {config.lut_mant_bits}"


@pytest.mark.parametrize("field,value", [("lut_lanes", 3), ("lut_lanes", 512), ("lut_mant_bits", 0),
                                         ("lut_mant_bits", 11)])
def test_config_refuses_bad_lut_parameters(field, value):
    with pytest.raises(ParoError, match=field):
        AcceleratorConfig(**{field: value})
