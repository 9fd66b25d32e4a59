"""The leading-zero cuts of 4-bit and 2-bit blocks' K (``k4_cut``, ``k2_cut = "leading-zero"``): their
definitions, their checks, and what they buy the calibration. The blocks that build them are tested with their
own (PE, K reduction, array, engine)."""

import numpy as np
import pytest

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.sw import golden


def test_leading_zero_cut_of_every_int8_value():
    """Every INT8 value: a signed INT4 mantissa in [-7, 7] and an exponent in [0, 5] whose ``m << e`` is within
    half a step (``2**(e-1)``) of it, exact below 8, relative error at most 1/8 above; the round cut's error
    reaches 15 (127 -> 112) where this one's is 1 (127 -> 128)."""
    x = np.arange(-128, 128)
    m, e = golden.reduce_int8_lz(x, 4)
    value = m << e
    assert m.min() == -7 and m.max() == 7 and e.min() == 0 and e.max() == 5
    assert (np.abs(value - x) <= np.where(e > 0, 1 << np.maximum(e - 1, 0), 0)).all()
    assert (value[np.abs(x) < 8] == x[np.abs(x) < 8]).all()
    assert (np.abs(value - x)[np.abs(x) >= 8] <= np.abs(x)[np.abs(x) >= 8] / 8).all()
    assert value[x == 127] == 128 and 16 * golden.reduce_int8_to_int4(127) == 112
    assert (golden.reduce_k(x, 4, {4: "leading-zero"}) == value).all()
    assert golden.k_reduce_shift(4, {4: "leading-zero"}) == 0 and golden.k_reduce_shift(4) == 4


def test_two_bit_leading_zero_cut_of_every_int8_value():
    """Every INT8 value: a sign in {-1, 0, 1} and an exponent in [0, 7], ``m << e`` the power of two nearest to
    it (rounded linearly, ties up: 3 -> 4, 6 -> 8, 12 -> 16), so within a third of it; the block cut maps
    every value below 32 in magnitude to 0 and 127 to 64."""
    x = np.arange(-128, 128)
    m, e = golden.reduce_int8_lz(x, 2)
    value = m << e
    assert set(m.tolist()) == {-1, 0, 1} and e.min() == 0 and e.max() == 7
    assert (value[x == 0] == 0).all() and (np.abs(value - x) <= np.abs(x) / 3).all()
    below = np.where(x != 0, 1 << (golden.bit_length(np.abs(x)) - 1), 0)     # the power of two at or below |x|
    nearest = np.where(2 * np.abs(x) >= 3 * below, 2 * below, below)
    assert (value == np.sign(x) * nearest).all()
    assert [int(value[x == v][0]) for v in (1, 3, 5, 6, 12, 127, -128, -3)] == [1, 4, 4, 8, 16, 128, -128, -4]
    assert 64 * golden.reduce_int8_to_int2(127) == 64 and 64 * golden.reduce_int8_to_int2(31) == 0
    assert (golden.reduce_k(x, 2, {2: "leading-zero"}) == value).all()
    assert golden.k_reduce_shift(2, {2: "leading-zero"}) == 0 and golden.k_reduce_shift(2, {4: "leading-zero"}) == 6


def test_k_cuts_are_checked():
    with pytest.raises(ParoError, match="k4_cut must be one of round, leading-zero, got 'x'"):
        AcceleratorConfig(k4_cut="x")
    with pytest.raises(ParoError, match="k2_cut must be one of block, leading-zero, got 'round'"):
        AcceleratorConfig(bitwidths=(0, 2, 4, 8), k2_cut="round")
    with pytest.raises(ParoError, match=r"k2_cut 'leading-zero' cuts the K of 2-bit blocks, and bitwidths \[0, 4, 8\] "
                                        "have none; add 2 to bitwidths or leave k2_cut at 'block'"):
        AcceleratorConfig(k2_cut="leading-zero")
    with pytest.raises(ParoError, match=r"k4_cut 'leading-zero' cuts the K of 4-bit blocks, and bitwidths \[0, 2, 8\] "
                                        "have none; add 4 to bitwidths or leave k4_cut at 'round'"):
        AcceleratorConfig(bitwidths=(0, 2, 8), k4_cut="leading-zero")
    config = AcceleratorConfig(bitwidths=(0, 2, 4, 8), k4_cut="leading-zero", k2_cut="leading-zero")
    assert AcceleratorConfig.from_dict(config.to_dict()) == config
    assert config.k_cuts == {4: "leading-zero", 2: "leading-zero"} and config.k_exponents == 4
    assert AcceleratorConfig(k4_cut="leading-zero").k_exponents == 2 and AcceleratorConfig().k_exponents == 0


def test_cli_refuses_a_two_bit_cut_without_two_bit_blocks(tmp_path, capsys):
    """``--k2-cut leading-zero`` on a {0, 4, 8} build: one line naming the problem and the fix, exit status 2,
    no plan written; with 2-bit blocks the plan carries both cuts."""
    from paro.flows.cli import main
    from paro.sw.plan import load_plan
    out = tmp_path / "plan.npz"
    assert main(["calibrate", "--workload", "tiny", "--density", "0.5", "--k2-cut", "leading-zero",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["paro: error: k2_cut 'leading-zero' cuts the K of 2-bit blocks, and bitwidths [0, 4, 8] have "
                   "none; add 2 to bitwidths or leave k2_cut at 'block'"]
    assert not out.exists()
    assert main(["calibrate", "--workload", "tiny", "--density", "0.5", "--bitwidths", "0,2,4,8", "--k2-cut",
                 "leading-zero", "--k4-cut", "leading-zero", "-o", str(out)]) == 0
    assert load_plan(out).config.k_cuts == {4: "leading-zero", 2: "leading-zero"}


def test_leading_zero_cut_meets_paros_budget_on_small():
    """At 4.80 average bits (no density, output metric, ILP) the leading-zero cut's plan has rel_l1 within
    1.1x of the all-8-bit plan's on ``small`` (the round cut's does not), keeping more blocks at 4 bits."""
    from paro.flows.precision import _config
    from paro.sw.calibrate import calibrate
    from paro.sw.workloads import make_workload
    import dataclasses

    workload = make_workload("small")
    quiet = dict(log=lambda message: None)
    _, dense = calibrate(workload, _config(workload, (0, 4, 8)), avg_bits=8.0, **quiet)
    plans = {}
    for cut in ("round", "leading-zero"):
        config = dataclasses.replace(_config(workload, (0, 4, 8)), k4_cut=cut)
        plans[cut] = calibrate(workload, config, avg_bits=4.8, error_metric="output", **quiet)
    ratio = {cut: report["rel_l1"] / dense["rel_l1"] for cut, (_, report) in plans.items()}
    print(f"rel_l1 / all-8-bit plan's: {ratio}")
    assert ratio["leading-zero"] <= 1.1 < ratio["round"]
    assert (plans["leading-zero"][0].bitmap == 4).sum() > 3 * (plans["round"][0].bitmap == 4).sum()


def test_two_bit_leading_zero_cut_lifts_low_budgets_on_small():
    """Head 1 of ``small`` at density 0.25 and 0.75 average bits (over 40% of the kept blocks at 2 bits; output metric,
    ILP): with 2-bit K cut per element the head's cosine against fp64 rises from below 0.99 (the block cut)
    to above it, and its rel_l1 falls by a tenth or more."""
    from paro.flows.precision import _config
    from paro.sw.calibrate import calibrate
    from paro.sw.workloads import make_workload
    import dataclasses

    workload = make_workload("small", heads=2)
    heads = {}
    for cut in ("block", "leading-zero"):
        config = dataclasses.replace(_config(workload, (0, 2, 4, 8)), k4_cut="leading-zero", k2_cut=cut)
        plan, report = calibrate(workload, config, density=0.25, avg_bits=0.75, error_metric="output",
                                 log=lambda message: None)
        heads[cut] = report["heads"][1]
        assert (plan.bitmap[1] == 2).sum() > 0.4 * (plan.bitmap[1] > 0).sum()
    print({cut: (head["cosine"], head["rel_l1"]) for cut, head in heads.items()})
    assert heads["block"]["cosine"] < 0.99 < heads["leading-zero"]["cosine"]
    assert heads["leading-zero"]["rel_l1"] < 0.9 * heads["block"]["rel_l1"]



def test_two_bit_blocks_beat_zero_four_eight_at_paros_budget_on_small():
    """At 4.80 average bits (no density, ILP, output-mse metric) with both leading-zero cuts, the {0, 2, 4, 8}
    plan uses 2-bit blocks and its rel_l1 is below the {0, 4, 8} plan's, both within 1.1x of the all-8-bit
    plan's, on ``small``."""
    from paro.flows.precision import LZ_CUTS, _config
    from paro.sw.calibrate import calibrate
    from paro.sw.workloads import make_workload

    workload = make_workload("small")
    quiet = dict(log=lambda message: None)
    _, dense = calibrate(workload, _config(workload, (0, 4, 8)), avg_bits=8.0, **quiet)
    plans = {bits: calibrate(workload, _config(workload, bits, LZ_CUTS), avg_bits=4.8, error_metric="output-mse",
                             **quiet) for bits in ((0, 4, 8), (0, 2, 4, 8))}
    ratio = {bits: report["rel_l1"] / dense["rel_l1"] for bits, (_, report) in plans.items()}
    print(f"rel_l1 / all-8-bit plan's: {ratio}")
    assert (plans[(0, 2, 4, 8)][0].bitmap == 2).sum() > 0
    assert ratio[(0, 2, 4, 8)] < ratio[(0, 4, 8)] <= 1.1