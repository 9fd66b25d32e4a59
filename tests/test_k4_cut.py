"""The leading-zero cut of 4-bit blocks' K (``k4_cut = "leading-zero"``): its definition, its checks, and what
it buys the calibration. The blocks that build it are tested with their own (PE, K reduction, array, engine)."""

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
    m, e = golden.reduce_int8_to_int4_lz(x)
    value = m << e
    assert m.min() == -7 and m.max() == 7 and e.min() == 0 and e.max() == 5
    assert (np.abs(value - x) <= np.where(e > 0, 1 << np.maximum(e - 1, 0), 0)).all()
    assert (value[np.abs(x) < 8] == x[np.abs(x) < 8]).all()
    assert (np.abs(value - x)[np.abs(x) >= 8] <= np.abs(x)[np.abs(x) >= 8] / 8).all()
    assert value[x == 127] == 128 and 16 * golden.reduce_int8_to_int4(127) == 112
    assert (golden.reduce_k(x, 4, "leading-zero") == value).all()
    assert golden.k_reduce_shift(4, "leading-zero") == 0 and golden.k_reduce_shift(4) == 4


def test_k4_cut_is_checked():
    with pytest.raises(ParoError, match="k4_cut must be one of round, leading-zero, got 'x'"):
        AcceleratorConfig(k4_cut="x")
    assert AcceleratorConfig.from_dict(AcceleratorConfig(k4_cut="leading-zero").to_dict()).k4_cut == "leading-zero"


def test_leading_zero_cut_meets_paros_budget_on_small():
    """At 4.80 average bits (no density, output metric, ILP) the leading-zero cut's plan has rel_l1 within
    1.1x of the all-8-bit plan's on ``small`` (the round cut: 1.14x), keeping more blocks at 4 bits."""
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
