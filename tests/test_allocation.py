"""Bit allocation (sw/allocation.py): the integer program is the exact optimum, never worse than the
Lagrangian, keeps the density mask and the per-row floors, and refuses what it cannot solve."""

import itertools

import numpy as np
import pytest

import paro.sw.allocation as allocation
from paro.errors import ParoError
from paro.sw.allocation import allocate, allocate_ilp, allocation_error
from paro.sw.sparsity import block_mask

SEED = 20261128


def random_errors(rng, heads, shape, bits):
    """Errors that fall with the bitwidth, mass as e0; random enough that the Lagrangian leaves gaps."""
    out = []
    for _ in range(heads):
        mass = rng.random(shape) ** 3
        err = {0: mass}
        for b in bits:
            err[b] = mass * rng.random(shape) * (0.5 ** (b / 2)) * rng.choice([0.2, 1.0, 3.0], size=shape)
        out.append(err)
    return out


def brute_force(errors, choices, avg_bits):
    """Exhaustive optimum over every assignment (tiny problems only)."""
    err = errors[0]
    shape = err[0].shape
    floor = np.zeros(shape, dtype=bool)
    floor[np.arange(shape[0]), np.argmax(err[0], axis=1)] = True
    best = np.inf
    for combo in itertools.product(choices, repeat=err[0].size):
        bitmap = np.array(combo, dtype=np.uint8).reshape(shape)
        if bitmap.sum() > avg_bits * bitmap.size or (bitmap[floor] == 0).any():
            continue
        best = min(best, allocation_error(errors, [bitmap]))
    return best


@pytest.mark.parametrize("bits", [(4, 8), (2, 4, 8)])
def test_ilp_is_the_exhaustive_optimum(bits):
    print(f"seed {SEED}")
    rng = np.random.default_rng(SEED)
    for trial in range(4):
        errors = random_errors(rng, 1, (2, 3), bits)
        avg = float(rng.choice([1.5, 2.5, 4.0]))
        maps, info = allocate_ilp(errors, (0,) + bits, avg_bits=avg)
        assert maps[0].sum() <= avg * maps[0].size
        assert allocation_error(errors, maps) == pytest.approx(brute_force(errors, (0,) + bits, avg), rel=1e-9)
        assert info["binaries"] <= maps[0].size * (len(bits) + 1)


def test_ilp_never_worse_than_lagrangian_and_reports_the_gap():
    rng = np.random.default_rng(SEED)
    gaps = []
    for trial in range(6):
        errors = random_errors(rng, 3, (6, 6), (2, 4, 8))
        maps, info = allocate(errors, (0, 2, 4, 8), avg_bits=2.2, method="ilp")
        assert info["method"] == "ilp" and info["objective"] == pytest.approx(allocation_error(errors, maps))
        assert info["objective"] <= info["lagrangian_objective"] * (1 + 1e-9)
        assert sum(m.sum() for m in maps) <= 2.2 * sum(m.size for m in maps)
        for err, bitmap in zip(errors, maps):                      # every query row keeps its best block
            assert (bitmap[np.arange(6), np.argmax(err[0], axis=1)] > 0).all()
        gaps.append(info["gap"])
    assert min(gaps) >= -1e-9 and max(gaps) > 1e-4, f"the random cases must show a Lagrangian gap: {gaps}"


def test_density_keeps_the_top_mass_mask():
    rng = np.random.default_rng(SEED)
    errors = random_errors(rng, 2, (8, 8), (2, 4, 8))
    maps, info = allocate(errors, (0, 2, 4, 8), density=0.25, avg_bits=1.0, method="ilp")
    for err, bitmap in zip(errors, maps):
        assert np.array_equal(bitmap > 0, block_mask(err[0], 0.25))
    assert sum(m.sum() for m in maps) <= 1.0 * sum(m.size for m in maps)
    assert {2, 4, 8} & set(np.unique(np.concatenate([m.ravel() for m in maps])).tolist())
    assert info["objective"] <= info["lagrangian_objective"] * (1 + 1e-9)


def test_refusals_are_one_line(monkeypatch):
    rng = np.random.default_rng(SEED)
    errors = random_errors(rng, 1, (4, 4), (4, 8))
    with pytest.raises(ParoError, match="unknown allocation method 'greedy'; choose one of ilp, lagrangian"):
        allocate(errors, (0, 4, 8), avg_bits=2.0, method="greedy")
    monkeypatch.setattr(allocation, "ILP_MAX_VARIABLES", 10)
    with pytest.raises(ParoError, match=r"has \d+ binaries \(over 10\); use --allocation lagrangian"):
        allocate(errors, (0, 4, 8), avg_bits=2.0, method="ilp")
    maps, info = allocate(errors, (0, 4, 8), avg_bits=2.0, method="lagrangian")
    assert info["method"] == "lagrangian" and "gap" not in info


def test_two_choice_shortcut_equals_the_solver(monkeypatch):
    """{4, 8} on a density mask: every block has two choices one step apart, solved by sorting; HiGHS on the
    same program finds the same objective."""
    rng = np.random.default_rng(SEED)
    errors = random_errors(rng, 3, (8, 8), (4, 8))
    maps, info = allocate_ilp(errors, (0, 4, 8), density=0.3, avg_bits=1.6)
    assert info["solver"].startswith("exact by sorting")
    monkeypatch.setattr(allocation, "_two_choice_optimum", lambda *args: None)
    solved, solver_info = allocate_ilp(errors, (0, 4, 8), density=0.3, avg_bits=1.6)
    assert solver_info["solver"].startswith("HiGHS")
    assert allocation_error(errors, maps) == pytest.approx(allocation_error(errors, solved), rel=1e-9)
    assert sum(m.sum() for m in maps) <= 1.6 * sum(m.size for m in maps)
