"""SimPicker's run-time decisions (``sw/simpicker.py``) and their golden integers (``sw/golden.py``):
speculation classes, token reuse, the LUT path of a block, grouping and the ideal cycles, the CLI."""

import json

import numpy as np
import pytest

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.flows.cli import main
from paro.sw import golden
from paro.sw.calibrate import calibrate
from paro.sw.quant import quantize_head
from paro.sw.reorder import TokenLayout, permutation_indices, permute_tokens
from paro.sw.simpicker import (SimPickerParams, array_groups, evaluate, frame_references, head_ideal_cycles,
                               simpicker_head)
from paro.sw.workloads import make_workload

SEED = 20261129
CONFIG = AcceleratorConfig(block_size=16, head_dim=32, max_seq_len=512)


def _tiny_head(h=1, order="FHW"):
    workload = make_workload("tiny")
    qkv = workload.head(h)
    permuted = tuple(permute_tokens(x, workload.layout, order, axis=0) for x in qkv)
    head, _ = quantize_head(*permuted, CONFIG.block_size)
    return workload, head


@pytest.mark.parametrize("field,value,match", [
    ("important_mass", float("nan"), "finite"), ("negligible_mass", -0.01, ">= 0"),
    ("reuse_threshold", float("inf"), "finite"), ("important_mass", 1.5, r"\[0, 1\]"),
    ("reuse_threshold", True, "finite"), ("negligible_mass", 0.9, "below important_mass")])
def test_params_refuse_bad_thresholds(field, value, match):
    with pytest.raises(ParoError, match=match):
        SimPickerParams(**{field: value})


def test_speculation_classes_take_the_important_mass_and_drop_the_negligible_tail():
    masses = np.array([[100, 50, 30, 10, 5, 3, 2, 0]])
    one = 1 << golden.SPEC_FRAC_BITS
    classes = golden.speculation_classes(masses, round(0.8 * one), round(0.05 * one))
    # 100, 50, 30 reach 80% of 200; the tail from 5 on is 10 = 5% (skipped); 10 is in between; 0 is skipped.
    assert classes.tolist() == [[2, 2, 2, 1, 0, 0, 0, 0]]
    shuffle = np.random.default_rng(SEED).permutation(8)
    assert np.array_equal(golden.speculation_classes(masses[:, shuffle], round(0.8 * one), round(0.05 * one)),
                          classes[:, shuffle])


def test_speculation_keeps_every_rows_best_block_and_never_a_dropped_one():
    rng = np.random.default_rng(SEED)
    x = rng.integers(-5000, 5000, (6, 6))
    allowed = rng.random((6, 6)) < 0.5
    allowed[np.arange(6), rng.integers(0, 6, 6)] = True
    masses = golden.speculation_masses(x, np.full(6, 16), CONFIG, allowed)
    assert np.all(masses[~allowed] == 0)
    assert np.all(masses.max(axis=1) == 16 << CONFIG.exp_bits)            # the best block: 2**0 x 16 keys
    classes = golden.speculation_classes(masses, 0, 0)
    assert np.all(classes[np.arange(6), masses.argmax(axis=1)] == golden.SPEC_FULL)
    assert np.all(classes[~allowed] == golden.SPEC_SKIP)


def test_reuse_compares_with_the_anchor_not_the_reference():
    """a -> b -> c: b is close to a and reuses it; c is close to b but not to a, so it is computed."""
    q8 = np.zeros((16, 4), dtype=np.int64)
    q8[0] = [100, 0, 0, 0]
    q8[1] = [100, 30, 0, 0]     # |b - a| / |a| = 0.30
    q8[2] = [100, 60, 0, 0]     # |c - b| / |b| = 0.29, |c - a| / |a| = 0.60
    q8[3] = [100, 0, 0, 0]      # an exact copy of a, its reference is c
    reference = np.array([-1, 0, 1, 2] + [-1] * 12)
    tau = round(0.35 ** 2 * (1 << golden.REUSE_FRAC_BITS))
    anchor = golden.reuse_anchors(q8, np.ones(1, dtype=np.int64), reference, tau, 16)
    assert anchor[:4].tolist() == [0, 0, 2, 3]
    exact = golden.reuse_anchors(q8, np.ones(1, dtype=np.int64), np.array([-1, -1, -1, 0] + [-1] * 12), 0, 16)
    assert exact[:4].tolist() == [0, 1, 2, 0]                              # threshold 0: exact copies only


def test_frame_references_point_one_frame_back_in_every_order():
    layout = TokenLayout(3, 2, 4, text_tokens=5)
    for order in ("FHW", "HWF", "WFH"):
        index = permutation_indices(layout, order)
        ref = frame_references(layout, order)
        for position, token in enumerate(index):
            video = token - layout.text_tokens
            if video < layout.height * layout.width:                        # text or first frame
                assert ref[position] == -1
            else:
                assert index[ref[position]] == token - layout.height * layout.width


def test_lut_block_is_the_sum_of_the_units_products():
    rng = np.random.default_rng(SEED)
    e = rng.integers(0, (1 << CONFIG.exp_bits) + 1, (4, 16))
    v8 = rng.integers(-128, 128, (16, 8))
    acc = golden.lut_block_accumulate(np.zeros((4, 8), dtype=np.int64), e, v8, 12345, CONFIG)
    mant, exp = golden.lut_fp(e, CONFIG)
    w = np.array([[sum(golden.lut_multiplier(mant[r, k], exp[r, k], v8[k])[c] for k in range(16)) for c in range(8)]
                  for r in range(4)])
    z = golden.p_shift(e, CONFIG)[:, None]
    u = golden.round_shift(w * 127, CONFIG.exp_bits - z)
    assert np.array_equal(acc, golden.round_shift(u * 12345, z))
    assert np.abs(u).max() <= 127 * 128 * 16


def test_lut_path_scales_a_small_row_by_its_segment_shift():
    """A row of small numerators keeps its precision: ``u`` is scaled up by ``2**z`` before its rounding."""
    e = np.array([[3, 1, 2, 0], [1 << CONFIG.exp_bits, 0, 0, 0]])
    v8 = np.array([[5], [-7], [100], [-128]])
    u, z = golden.lut_path(e, v8, CONFIG)
    assert z.tolist() == [CONFIG.exp_bits - 2, 0]
    assert u[:, 0].tolist() == [golden.round_shift((15 - 7 + 200) * 127, 2), 5 * 127]


def test_lut_block_pv_is_exact_but_for_the_numerators_rounding():
    """The LUT path's PV against the exact ``e * v * cv * 127 / 2**exp_bits``: within the FP rounding of the
    numerators (``2**-(M + 1)`` relative), half a unit of ``u`` (``cv / 2**z`` of the accumulator) and half a
    unit."""
    rng = np.random.default_rng(SEED)
    e = rng.integers(1, (1 << CONFIG.exp_bits) + 1, (8, 16))
    v8 = rng.integers(0, 128, (16, 8))                       # one sign: no cancellation in the bound
    acc = golden.lut_block_accumulate(np.zeros((8, 8), dtype=np.int64), e, v8, 20000, CONFIG)
    exact = (e.astype(float) @ v8) * 20000 * 127 / 2 ** CONFIG.exp_bits
    z = golden.p_shift(e, CONFIG)[:, None]
    assert np.all(np.abs(acc - exact) <= exact * 2.0 ** -(CONFIG.lut_mant_bits + 1) + 0.5 * 20000 / 2.0 ** z + 0.5)


def test_lut_blocks_in_the_golden_attention_beat_4_bit_blocks():
    """Every second block on the LUT path (K at 4 bits for QK^T, FP numerators for PV) vs the same blocks at
    4 bits (K and P at 4 bits): both close to the all-8-bit run, the LUT path closer."""
    _, head = _tiny_head()
    blocks = head.q8.shape[0] // CONFIG.block_size

    def cosine_to_full(code):
        bitmap = np.full((blocks, blocks), 8)
        bitmap[:, 1::2] = code
        out, _ = golden.attention_head(head, bitmap, CONFIG)
        full, _ = golden.attention_head(head, np.full((blocks, blocks), 8), CONFIG)
        a, b = out[:head.n_tokens].ravel().astype(float), full[:head.n_tokens].ravel().astype(float)
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    lut, four = cosine_to_full(golden.LUT_BLOCK), cosine_to_full(4)
    assert 0.995 < four < lut < 1.0


def test_simpicker_head_without_reuse_runs_the_golden_model_on_its_bitmap():
    workload, head = _tiny_head()
    params = SimPickerParams(important_mass=1.0, negligible_mass=0.0, reuse_threshold=0.0)
    result = simpicker_head(head, workload.layout, "FHW", CONFIG, params)
    assert set(np.unique(result["bitmap"]).tolist()) <= {0, 8}
    assert result["computed"].all()
    codes, _ = golden.attention_head(head, result["bitmap"], CONFIG)
    assert np.array_equal(result["codes"], codes)


def test_reused_rows_take_their_anchors_codes():
    workload, head = _tiny_head(h=1)
    result = simpicker_head(head, workload.layout, "FHW", CONFIG, SimPickerParams(reuse_threshold=0.5))
    reused = np.flatnonzero(~result["computed"])
    assert reused.size > 0, "the tiny temporal head has frame-to-frame neighbours within 0.5"
    assert np.array_equal(result["codes"][reused], result["codes"][result["anchor"][reused]])
    again = simpicker_head(head, workload.layout, "FHW", CONFIG, SimPickerParams(reuse_threshold=0.5))
    assert all(np.array_equal(result[k], again[k]) for k in ("classes", "bitmap", "anchor", "codes"))


def test_grouping_packs_scattered_rows():
    rows = np.zeros(16, dtype=bool)
    rows[::4] = True                              # one row in each aligned group of 4
    assert array_groups(rows, 4, grouping=False) == 4 and array_groups(rows, 4, grouping=True) == 1
    bitmap = np.full((2, 2), 8)
    computed = np.ones(32, dtype=bool)
    dense = head_ideal_cycles(bitmap, computed, CONFIG, grouping=True)
    B, d = CONFIG.block_size, CONFIG.head_dim
    assert dense["array"] == 4 * 2 * B * B * d // (CONFIG.rows * CONFIG.cols) and dense["lut"] == 0
    computed[1::2] = False
    assert (head_ideal_cycles(bitmap, computed, CONFIG, True)["array"]
            < head_ideal_cycles(bitmap, computed, CONFIG, False)["array"])
    lut = head_ideal_cycles(np.full((2, 2), golden.LUT_BLOCK), np.ones(32, dtype=bool), CONFIG, True)
    assert lut["lut"] == 4 * B * B * -(-d // CONFIG.lut_lanes)


def test_evaluate_paro_matches_calibrates_own_quality():
    workload = make_workload("tiny")
    config = AcceleratorConfig(head_dim=workload.head_dim, block_size=32, max_seq_len=512)
    plan, report = calibrate(workload, config, density=0.5, log=lambda message: None)
    paro = evaluate(workload, config, SimPickerParams(), "paro", plan)
    assert paro["cosine"] == pytest.approx(report["cosine"], abs=1e-12)
    both = evaluate(workload, config, SimPickerParams(), "both", plan)
    assert sum(both["fractions"].values()) == pytest.approx(1.0)
    assert both["ideal_cycles"] <= paro["ideal_cycles"] + both["speculation_cycles"]


def test_cli_calibrate_reports_simpicker_and_refuses_bad_thresholds(tmp_path, capsys):
    plan, report = tmp_path / "plan.npz", tmp_path / "report.json"
    assert main(["calibrate", "--workload", "tiny", "--density", "0.5", "--method", "simpicker",
                 "--holdout-sample", "1", "-o", str(plan), "--report", str(report)]) == 0
    result = json.loads(report.read_text())["simpicker"]
    assert result["method"] == "simpicker" and "heldout" in result and 0 < result["cosine"] <= 1
    capsys.readouterr()
    bad = tmp_path / "bad.npz"
    assert main(["calibrate", "--workload", "tiny", "--density", "0.5", "--method", "both",
                 "--negligible-mass", "-1", "-o", str(bad)]) == 2
    assert not bad.exists()
    assert capsys.readouterr().err.strip().splitlines() == ["paro: error: negligible_mass must be >= 0, got -1.0"]
    # the engine RTL: speculation needs a build with it; the LUT path and token reuse are not in it yet
    assert main(["simulate", "--plan", str(plan), "--method", "simpicker"]) == 2
    assert capsys.readouterr().err.startswith("paro: error: --method simpicker needs an engine built with "
                                              "speculation; this plan's has none: calibrate it with --spec-lanes N")
    spec_plan = tmp_path / "spec.npz"
    assert main(["calibrate", "--workload", "tiny", "--density", "0.5", "--spec-lanes", "8", "-o", str(spec_plan)]) == 0
    capsys.readouterr()
    for flags, message in ((["--method", "simpicker"], "--unimportant lut needs an engine built with the LUT "
                                                       "path; this plan's has none: calibrate it with --lut-path"),
                           (["--method", "both", "--unimportant", "full"], "token reuse is not in the engine RTL "
                                                                           "yet; pass --reuse-threshold 0")):
        assert main(["simulate", "--plan", str(spec_plan), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    # bad thresholds end simulate and model with one line, before anything is built or written
    report = tmp_path / "bad.json"
    for command, value in (("simulate", "nan"), ("model", "-0.5")):
        assert main([command, "--plan", str(spec_plan), "--method", "simpicker", "--unimportant", "low",
                     "--reuse-threshold", "0", "--important-mass", value, "--report", str(report)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("paro: error: important_mass must be"), err
        assert not report.exists()
