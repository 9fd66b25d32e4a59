"""Calibration on the built-in workloads: the issue's accuracy and reordering targets, determinism, CLI."""

import json

import numpy as np
import pytest

from paro.flows.cli import main
from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.sw.calibrate import calibrate
from paro.sw.plan import load_plan
from paro.sw.reorder import TokenLayout
from paro.sw.workloads import HEAD_KINDS, make_workload

QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def small_mixed():
    workload = make_workload("small")
    return calibrate(workload, AcceleratorConfig(head_dim=64), density=0.25, avg_bits=1.5, **QUIET)


def test_quantization_loss_at_density_quarter_with_mixed_bits(small_mixed):
    plan, report = small_mixed
    assert abs(report["density"] - 0.25) < 0.01
    kept = plan.bitmap[plan.bitmap > 0]
    assert (kept == 4).mean() > 0.3 and (kept == 8).mean() > 0.3, "kept blocks must mix 4 and 8 bits"
    assert report["cosine_fp_mask"] - report["cosine"] <= 0.005
    assert report["quantization_loss"] == pytest.approx(report["cosine_fp_mask"] - report["cosine"])


def test_reordering_pays_for_heads_whose_pattern_crosses_the_contiguous_axis(small_mixed):
    plan, report = small_mixed
    pays = report["reorder_pays"]["heads"]
    temporal = [r["head"] for r in report["heads"] if r["kind"] == "temporal"]
    assert temporal and set(temporal) <= set(pays), "temporal heads must be found to need reordering"
    for head in pays:
        entry = report["heads"][head]
        assert entry["order"] != "FHW"
        assert entry["rel_l1"] <= 0.7 * entry["rel_l1_identity"], f"head {head}: {entry}"


def test_report_states_identity_concentration(small_mixed):
    _, report = small_mixed
    for entry in report["heads"]:
        assert 0 < entry["identity_top25_mass"] < 1
        assert set(entry["captured_mass"]) == {"FHW", "FWH", "HFW", "HWF", "WFH", "WHF"}
    # not artificially concentrated: some heads keep well under 90% of their mass in the best quarter
    assert min(e["identity_top25_mass"] for e in report["heads"]) < 0.8


def test_avg_bits_4_8_without_density():
    workload = make_workload("small")
    plan, report = calibrate(workload, AcceleratorConfig(head_dim=64), avg_bits=4.8, **QUIET)
    assert report["avg_bits"] <= 4.8 + 1e-9 and report["avg_bits"] > 4.5
    assert report["cosine"] >= 0.99
    assert report["budget"] == {"density": None, "avg_bits": 4.8, "eval_density": 0.25}


def test_calibration_is_deterministic():
    workload = make_workload("tiny")
    config = AcceleratorConfig(head_dim=32, block_size=16)
    a, ra = calibrate(workload, config, density=0.5, avg_bits=3.0, **QUIET)
    b, rb = calibrate(workload, config, density=0.5, avg_bits=3.0, **QUIET)
    assert a.orders == b.orders and np.array_equal(a.bitmap, b.bitmap)
    assert ra["cosine"] == rb["cosine"]


def test_held_out_sample_uses_the_same_weights_and_other_content():
    first, other = make_workload("tiny"), make_workload("tiny", sample=1)
    q0, k0, v0 = first.head(1)
    q1, k1, v1 = other.head(1)
    assert q0.shape == q1.shape and not np.allclose(q0, q1) and not np.allclose(v0, v1)
    # The positional and sink channels depend on the head and the layout only: equal in both samples.
    d_pos = 3 * 2 * max(2, first.head_dim // 16)
    assert np.array_equal(q0[:, -1 - d_pos:], q1[:, -1 - d_pos:]) and np.array_equal(k0[:, -1], k1[:, -1])
    assert other.source()["sample"] == 1 and first.source()["sample"] == 0
    with pytest.raises(ParoError, match=r"a synthetic workload has 4 samples \(0..3\), got 4"):
        make_workload("tiny", sample=4)


def test_held_out_quality_is_reported_and_checked():
    workload = make_workload("tiny")
    config = AcceleratorConfig(head_dim=32, block_size=16)
    plan, report = calibrate(workload, config, density=0.5, avg_bits=3.0, holdout=make_workload("tiny", sample=2),
                             **QUIET)
    held = report["heldout"]
    assert held["workload"]["sample"] == 2 and len(held["heads"]) == workload.heads
    assert 0.5 < held["cosine"] < 1 and held["rel_l1"] > 0
    assert held["cosine"] != report["cosine"]                 # another input, another number
    same, _ = calibrate(workload, config, density=0.5, avg_bits=3.0, **QUIET)
    assert np.array_equal(same.bitmap, plan.bitmap) and same.orders == plan.orders   # held-out data chooses nothing
    with pytest.raises(ParoError, match="the held-out Q/K/V is the calibration data itself"):
        calibrate(workload, config, density=0.5, holdout=make_workload("tiny"), **QUIET)
    with pytest.raises(ParoError, match="must have the calibration data's layout"):
        calibrate(workload, config, density=0.5, holdout=make_workload("small"), **QUIET)


def test_large_heads_are_measured_on_a_sample_of_query_blocks(monkeypatch):
    """Past EVAL_QUERY_BLOCKS query blocks the accuracy comes from evenly spaced blocks; on ``small`` at block
    size 16 (68 blocks) the sampled cosine is within 0.002 of the whole-head one, and the plan is the same."""
    import paro.sw.calibrate as calibration
    assert calibration.evaluation_blocks(17) == list(range(17))
    sample = calibration.evaluation_blocks(278)
    assert len(sample) == 32 and sample[0] == 0 and sample[-1] == 277 and sample == sorted(set(sample))
    workload = make_workload("small", heads=2)
    config = AcceleratorConfig(head_dim=64, block_size=16)
    plan, report = calibrate(workload, config, density=0.3, avg_bits=2.0, **QUIET)
    assert report["evaluation"]["query_blocks_per_head"] == 32 and report["evaluation"]["of"] == 68
    monkeypatch.setattr(calibration, "EVAL_QUERY_BLOCKS", 1000)
    whole_plan, whole = calibrate(workload, config, density=0.3, avg_bits=2.0, **QUIET)
    assert whole["evaluation"]["query_blocks_per_head"] == 68
    assert np.array_equal(plan.bitmap, whole_plan.bitmap) and plan.orders == whole_plan.orders
    assert abs(report["cosine"] - whole["cosine"]) < 0.002 and report["cosine"] != whole["cosine"]
    assert abs(report["rel_l1"] - whole["rel_l1"]) < 0.1 * whole["rel_l1"]


def test_workload_head_kinds_cycle():
    workload = make_workload("small")
    assert [workload.head_kind(h) for h in range(5)] == list(HEAD_KINDS)


def test_cli_calibrate_and_plot(tmp_path, capsys):
    plan_path, report_path = tmp_path / "plan.npz", tmp_path / "report.json"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "-o", str(plan_path), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    for key in ("density", "avg_bits", "avg_bits_kept", "cosine", "rel_l1", "cosine_fp_mask", "cosine_identity",
                "rel_l1_identity"):
        assert key in report
    assert load_plan(plan_path).heads == 4
    assert main(["plot", str(plan_path), "-o", str(tmp_path / "plots")]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "head0.png", "head1.png", "head2.png", "head3.png", "overview.png"]


@pytest.mark.parametrize("argv,message", [
    (["--workload", "huge", "--density", "0.25"], "unknown workload 'huge'"),
    (["--workload", "tiny", "--block-size", "16"], "give --density, --avg-bits or both"),
    (["--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "1"],
     "--avg-bits 1.0 is below what --density 0.5 needs at 4 bits"),
    (["--qkv", "nothing.npz", "--density", "0.5"], "--qkv needs --grid F,H,W"),
    (["--workload", "tiny", "--block-size", "16", "--density", "0.5", "--holdout-sample", "1", "--holdout-qkv",
      "x.npz"], "give --holdout-sample (built-in workloads) or --holdout-qkv FILE, not both"),
    (["--workload", "tiny", "--block-size", "16", "--density", "0.5", "--holdout-sample", "7"],
     "a synthetic workload has 4 samples (0..3), got 7"),
])
def test_cli_calibrate_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "plan.npz"
    assert main(["calibrate", *argv, "-o", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists()


def test_qkv_file_with_padding(tmp_path, capsys):
    rng = np.random.default_rng(0)
    heads, tokens, d = 2, 5 + 3 * 4 * 5, 32          # 65 tokens: not a multiple of the block size
    path = tmp_path / "qkv.npz"
    np.savez(path, q=rng.standard_normal((heads, tokens, d)), k=rng.standard_normal((heads, tokens, d)),
             v=rng.standard_normal((heads, tokens, d)))
    plan_path = tmp_path / "plan.npz"
    assert main(["calibrate", "--qkv", str(path), "--grid", "3,4,5", "--text-tokens", "5", "--block-size", "16",
                 "--density", "0.6", "-o", str(plan_path)]) == 0
    plan = load_plan(plan_path)
    assert plan.bitmap.shape == (2, 5, 5) and plan.source["kind"] == "file"
    bad = tmp_path / "bad.npz"
    np.savez(bad, q=rng.standard_normal((heads, tokens, d)), k=rng.standard_normal((heads, tokens, d)))
    with pytest.raises(ParoError, match="has no array 'v'"):
        make_workload(qkv=bad, layout=plan.layout)
    for heads in (0, -1, 3):
        assert main(["calibrate", "--qkv", str(path), "--grid", "3,4,5", "--text-tokens", "5", "--block-size", "16",
                     "--density", "0.6", "--heads", str(heads), "-o", str(tmp_path / "h.npz")]) == 2
        assert f"--heads must be in [1, 2] for Q/K/V file qkv.npz, got {heads}" in capsys.readouterr().err
        assert not (tmp_path / "h.npz").exists()
    with pytest.raises(ParoError, match="has 65 tokens but --grid 3,4,6"):
        make_workload(qkv=path, layout=TokenLayout(3, 4, 6, 5))


def test_output_error_metric_is_the_renormalised_output_change_of_a_skipped_block():
    """``block_errors(metric="output")``: e0 of block (i, j) times the tokens is the sum over the block's rows of
    |O without block j - O|_1 times the row's remaining mass (recomputed here in fp64 from the same Q/K/V);
    the masks' mass stays the attention mass, and every 2-, 4- and 8-bit error is finite and non-negative."""
    from paro.sw.calibrate import block_errors
    from paro.sw.quant import quantize_head
    from paro.sw.sparsity import attention_rows

    workload = make_workload("tiny")
    config = AcceleratorConfig(head_dim=workload.head_dim, block_size=16, bitwidths=(0, 2, 4, 8))
    q, k, v = workload.head(0)
    head, scales = quantize_head(q, k, v, config.block_size)
    errors = block_errors(q, k, head, scales, config, vp=v, metric="output")
    mass = block_errors(q, k, head, scales, config)[0]
    assert np.allclose(errors["mass"], mass) and set(errors) == {"mass", 0, 2, 4, 8}
    assert all(np.isfinite(errors[b]).all() and (errors[b] >= 0).all() for b in (2, 4, 8))
    B, n = config.block_size, q.shape[0]
    for i, j in ((0, 0), (1, 3), (2, 1)):
        rows = slice(i * B, min((i + 1) * B, n))
        p = attention_rows(q, k, rows.start, rows.stop, dtype=np.float64)
        without = p.copy()
        without[:, j * B:(j + 1) * B] = 0
        remaining = without.sum(axis=1, keepdims=True)
        change = (without / remaining - p) @ v.astype(np.float64) * remaining
        assert errors[0][i, j] * n == pytest.approx(np.abs(change).sum(), rel=2e-3), (i, j)


def test_output_error_metrics_do_not_renormalise_the_p_rounding():
    """The engine divides by the row sum of the numerators before P is rounded, so an 8-bit block's output
    error is the rounding's change ``sum_k dR_rk v_k / l_r``, not renormalised: e8 of block (i, j) times the
    tokens is the sum over the block's rows of its L1 (``output``) or its squared L2 over ``l_r`` squared
    (``output-mse``), recomputed here in fp64 with the float model's rounding (per (row, block) leading-zero
    scale, 127 levels)."""
    from paro.sw.calibrate import block_errors
    from paro.sw.quant import quantize_head

    workload = make_workload("tiny")
    config = AcceleratorConfig(head_dim=workload.head_dim, block_size=16)
    q, k, v = workload.head(1)
    head, scales = quantize_head(q, k, v, config.block_size)
    errors = {metric: block_errors(q, k, head, scales, config, vp=v, metric=metric)
              for metric in ("output", "output-mse")}
    B, n = config.block_size, q.shape[0]
    for i, j in ((0, 0), (1, 3), (2, 1)):
        rows = slice(i * B, min((i + 1) * B, n))
        s = q[rows].astype(np.float64) @ k.T.astype(np.float64) / np.sqrt(q.shape[1])
        e = np.exp(s - s.max(axis=1, keepdims=True))
        block = e[:, j * B:(j + 1) * B]
        factor = 2.0 ** np.clip(np.floor(-np.log2(block.max(axis=1, keepdims=True))), 0, 15) * 127
        change = (np.rint(block * factor) / factor - block) @ v[j * B:(j + 1) * B].astype(np.float64)
        change /= e.sum(axis=1, keepdims=True)
        assert errors["output"][8][i, j] * n == pytest.approx(np.abs(change).sum(), rel=2e-3), (i, j)
        assert errors["output-mse"][8][i, j] * n == pytest.approx(np.square(change).sum(), rel=4e-3), (i, j)


def _block_errors_plainly(qp, kp, head, scales, config):
    """The probability-metric errors written plainly (natural key order, one block at a time, P normalised
    before rounding is compared): the twin the vectorised :func:`block_errors` must agree with."""
    from paro.sw import golden
    B, n, d = config.block_size, head.n_tokens, qp.shape[1]
    nb = head.q8.shape[0] // B
    kpad = np.zeros((nb * B, d), dtype=np.float32)
    kpad[:n] = kp
    out = {b: np.zeros((nb, nb)) for b in (0, 4, 8)}

    def rounded(pt, levels):
        blocks = pt.reshape(pt.shape[0], nb, B)
        peak = np.minimum(blocks.max(axis=2, keepdims=True), 1.0)
        scale = 2.0 ** np.clip(np.floor(-np.log2(np.maximum(peak, 1e-30))), 0, golden.P_SHIFT_MAX)
        return (np.rint(np.minimum(blocks, 1.0) * scale * levels) / (scale * levels)).reshape(pt.shape)

    k4 = (16.0 * golden.reduce_k(head.k8, 4) * np.repeat(head.k_scale, B)[:, None]).astype(np.float32)
    for i in range(-(-n // B)):
        rows = slice(i * B, min((i + 1) * B, n))
        s = (qp[rows].astype(np.float32) @ kpad.T) / np.float32(np.sqrt(d))
        s[:, n:] = -np.inf
        m = s.max(axis=1, keepdims=True)
        pt = np.exp(s - m)
        l = pt.sum(axis=1, keepdims=True)
        p = pt / l
        shift = (qp[rows].astype(np.float32) @ scales[3].astype(np.float32)) / np.float32(np.sqrt(d))
        s4 = (head.q8[rows].astype(np.float32) * np.float32(head.q_scale[i]) @ k4.T) / np.float32(np.sqrt(d))
        s4 = s4 + shift[:, None]
        s4[:, n:] = -np.inf
        for b, approx in ((0, 0 * p), (8, rounded(pt, 127) / l), (4, rounded(np.exp(s4 - m), 15) / l)):
            out[b][i] = np.abs(p - approx).reshape(p.shape[0], nb, B).sum(axis=(0, 2))
    return {b: e / n for b, e in out.items()}


@pytest.mark.parametrize("name, order", [("tiny", "HWF"), ("small", "WFH")])
def test_block_errors_agree_with_their_plain_twin_and_masses_with_fp64(name, order):
    """The vectorised error pass (interleaved keys, unnormalised sums) gives the plain formula's e0, e4 and e8
    to float32 rounding (a product rounded one ulp apart may put an element on the other side of a P level:
    a few blocks differ by up to 1%), and the masses it hands to a MassAccumulator on the way (identity order)
    are every order's fp64 block masses."""
    from paro.sw.calibrate import block_errors, key_interleave
    from paro.sw.quant import quantize_head
    from paro.sw.reorder import PERMUTATIONS, permute_tokens
    from paro.sw.sparsity import MassAccumulator

    workload = make_workload(name, heads=1)
    config = AcceleratorConfig(head_dim=workload.head_dim, block_size=16 if name == "tiny" else 64)
    B, layout = config.block_size, workload.layout
    q, k, v = workload.head(0)
    qp, kp, vp = (permute_tokens(x, layout, order, axis=0) for x in (q, k, v))
    head, scales = quantize_head(qp, kp, vp, B)
    fast = block_errors(qp, kp, head, scales, config)
    plain = _block_errors_plainly(qp, kp, head, scales, config)
    for b in (0, 4, 8):
        relative = np.abs(fast[b] - plain[b]) / np.maximum(plain[b], 1e-3 * plain[b].max())
        assert relative.max() < 1e-2 and (relative > 1e-4).mean() < 0.01, (b, relative.max())
        assert fast[b].sum() == pytest.approx(plain[b].sum(), rel=1e-4), b
    assert fast[4].sum() > 2 * fast[8].sum() > 0

    nb = -(-layout.tokens // B)
    accumulator = MassAccumulator(layout, B, key_tokens=key_interleave(nb, B))
    head, scales = quantize_head(q, k, v, B)
    block_errors(q, k, head, scales, config, masses=accumulator)
    masses = accumulator.result()
    for o in PERMUTATIONS:
        qo, ko = (permute_tokens(x, layout, o, axis=0).astype(np.float64) for x in (q, k))
        s = qo @ ko.T / np.sqrt(q.shape[1])
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        padded = np.zeros((nb * B, nb * B))
        padded[:layout.tokens, :layout.tokens] = p
        expected = padded.reshape(nb, B, nb, B).sum(axis=(1, 3)) / layout.tokens
        assert np.allclose(masses[o], expected, rtol=1e-5, atol=1e-9), o


def test_calibration_does_not_depend_on_jobs():
    """Heads calibrated in threads give the plan and the report numbers of one thread, bit for bit."""
    workload = make_workload("tiny")
    config = AcceleratorConfig(head_dim=32, block_size=16)
    one, r1 = calibrate(workload, config, density=0.5, avg_bits=3.0, jobs=1, **QUIET)
    three, r3 = calibrate(workload, config, density=0.5, avg_bits=3.0, jobs=3, **QUIET)
    assert one.orders == three.orders and np.array_equal(one.bitmap, three.bitmap)
    assert np.array_equal(one.block_mass, three.block_mass) and np.array_equal(one.k_scale, three.k_scale)
    assert r1["heads"] == r3["heads"] and (r1["cosine"], r1["rel_l1"]) == (r3["cosine"], r3["rel_l1"])
    with pytest.raises(ParoError, match="--jobs must be at least 1, got 0"):
        calibrate(workload, config, density=0.5, jobs=0, **QUIET)


def test_calibration_speed_bench_times_a_child_calibration(tmp_path):
    """``paro bench calibration-speed`` runs ``paro calibrate`` in a child process and records its wall clock,
    peak memory and phases beside the command, config and target (here on ``tiny``, for speed)."""
    from paro.flows.calibration_speed import CALIBRATION_TARGET, bench_calibration_speed

    result, plot = bench_calibration_speed(tmp_path / "speed.json", workload="tiny", density=0.5, avg_bits=3.0)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["calibrate_command"] == "paro calibrate --workload tiny --density 0.5 --avg-bits 3.0"
    assert saved["workload"]["name"] == "tiny" and saved["config"]["block_size"] == 64
    assert 0 < sum(v for k, v in saved["phases_seconds"].items() if k != "total") <= saved["wall_seconds"]
    assert set(saved["phases_seconds"]) == {"orders_and_errors", "allocation", "quality", "total"}
    assert 50 < saved["peak_rss_mb"] < CALIBRATION_TARGET["peak_rss_mb"] and saved["jobs"] >= 1
    assert saved["meets_target"] is True and plot.exists() and plot.stat().st_size > 1000


def test_small_plan_is_the_committed_results_plan():
    """Calibrating ``small`` at density 0.25 and 1.5 average bits gives the plan of the committed
    results/small_calibration.json (made by the code before the vectorised, threaded calibration): every
    head's order and blocks per bitwidth, and the same accuracy."""
    from pathlib import Path
    committed = json.loads((Path(__file__).resolve().parent.parent / "results" / "small_calibration.json").read_text())
    config = AcceleratorConfig.from_dict(committed["config"])
    budget = committed["budget"]
    _, report = calibrate(make_workload("small"), config, density=budget["density"], avg_bits=budget["avg_bits"],
                          **QUIET)
    for head, old in zip(report["heads"], committed["heads"], strict=True):
        assert (head["order"], head["blocks_by_bits"]) == (old["order"], old["blocks_by_bits"]), head["head"]
    for key in ("cosine", "rel_l1", "cosine_fp_mask", "cosine_identity", "rel_l1_identity"):
        assert report[key] == pytest.approx(committed[key], rel=1e-9, abs=1e-12), key


def test_progress_counts_finished_heads_and_ends_with_the_last():
    """Off a terminal the bar prints a line per 10%; with items it says how many heads are done, and its 100%
    line waits for the last head; updates from several threads all count."""
    import io
    from concurrent.futures import ThreadPoolExecutor
    from paro.sw.calibrate import Progress

    out = io.StringIO()
    progress = Progress(200, "calibrate", stream=out, items=4)

    def head(_):
        for _ in range(50):
            progress(1)
        progress.item_done()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(head, range(4)))
    lines = out.getvalue().splitlines()
    assert progress.done == 200 and progress.items_done == 4
    assert lines[-1].startswith("[paro] calibrate [" + "#" * 30 + "] 100.0% (4/4 heads done)")
    assert sum("100.0%" in line for line in lines) == 1 and 10 <= len(lines) <= 11
