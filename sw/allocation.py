"""Block bitwidth allocation for a layer: integer programming (exact) or the Lagrangian (fast).

Both minimise the summed per-block error of :mod:`sw.quant` (``errors[h][b][i, j]``: the error of block
(i, j) of head h at b bits, ``b = 0`` the block's mass) under the layer's average-bit budget (every block
counts, skipped ones as 0 bits), with every query row keeping its highest-mass block.

* ``ilp``: a multiple-choice knapsack solved as a 0/1 integer program with HiGHS (``scipy.optimize.milp``):
  one binary per block and bitwidth, one choice per block, ``sum bits <= avg_bits x blocks``. With
  ``density`` the kept set is the top-mass mask (:func:`sw.sparsity.block_mask`, as in PAROAttention) and
  the program chooses the bitwidths of the kept blocks; without it, which blocks to keep too. (Choosing the
  kept set jointly under a density cap was tried: on ``small`` at density 0.25 and 1.5 bits it lowered the
  summed-L1 objective by 18% but the output cosine fell from 0.993 to 0.985 - the L1 of P overstates
  rounding noise, which averages out in P V, against a skipped block's mass, which does not.) Choices
  another choice of the same block dominates (no more error for fewer bits) are left out before solving,
  which does not change the optimum. Problems above :data:`ILP_MAX_VARIABLES` binaries are refused with a
  one-line error that names the fast method.
* ``lagrangian``: :func:`sw.quant.allocate_bits` - with ``density`` the top-mass mask and greedy upgrades,
  without it a bisection on the price of a bit (optimal up to the blocks at the final price).

:func:`allocate` returns the bitmaps and a dict for the calibration report: the method, the objective of
both methods on the same errors and their relative gap, the solver's status and time.
"""

import time

import numpy as np

from paro.errors import ParoError

from .quant import allocate_bits, block_mass
from .sparsity import block_mask

__all__ = ["METHODS", "ILP_MAX_VARIABLES", "allocate", "allocate_ilp", "allocation_error"]

METHODS = ("ilp", "lagrangian")
#: Largest integer program :func:`allocate_ilp` hands to HiGHS (binaries after pruning); beyond it the solve
#: was not tried. A CogVideoX-5B layer with --avg-bits alone (48 x 278 x 278 blocks, up to three choices each)
#: is above it; with --density its kept blocks' {4, 8} choice is solved by sorting, whatever the size.
ILP_MAX_VARIABLES = 1_500_000
#: Wall-clock limit of one solve; the best solution found so far is used and its MIP gap reported.
ILP_TIME_LIMIT_S = 300.0


def allocation_error(errors, maps):
    """Summed error of ``maps`` (bitmaps per head) under ``errors`` (the objective both methods minimise)."""
    total = 0.0
    for err, bitmap in zip(errors, maps):
        for bits in np.unique(bitmap):
            total += float(err[int(bits)][bitmap == bits].sum(dtype=np.float64))
    return total


def _floors(err):
    """Each query row's highest-mass block: kept whatever the budget."""
    floor = np.zeros(err[0].shape, dtype=bool)
    floor[np.arange(floor.shape[0]), np.argmax(block_mass(err), axis=1)] = True
    return floor


def _split_flat(flat, errors):
    maps, offset = [], 0
    for err in errors:
        maps.append(flat[offset:offset + err[0].size].reshape(err[0].shape))
        offset += err[0].size
    return maps


def _two_choice_optimum(stacked, allowed, choices, budget):
    """The optimum without a solver when every block has at most two candidate bitwidths and every
    upgrade costs the same number of bits (e.g. {4, 8} on a density mask): the program is then a knapsack of
    equal weights, whose optimum takes the largest error reductions first. ``None`` when that does not hold."""
    count = allowed.sum(axis=0)
    if count.max() > 2 or count.min() < 1:
        return None
    rows = np.arange(len(choices))[:, None]
    low = np.where(allowed, rows, len(choices)).min(axis=0)
    high = np.where(allowed, rows, -1).max(axis=0)
    bits = np.array(choices)
    steps = np.unique(bits[high[count == 2]] - bits[low[count == 2]])
    if len(steps) > 1:
        return None
    flat = bits[low].astype(np.uint8)
    room = budget - float(flat.sum(dtype=np.int64))
    if room < -1e-9:
        raise ParoError(f"the bit budget cannot keep every block it must ({-room:.0f} bits short); raise --avg-bits")
    if len(steps):
        columns = np.arange(stacked.shape[1])
        gain = np.where(count == 2, stacked[low, columns] - stacked[high, columns], -np.inf)
        order = np.argsort(-gain, kind="stable")[:int(room // steps[0] + 1e-9)]
        order = order[gain[order] > 0]
        flat[order] = bits[high[order]]
    return flat


def allocate_ilp(errors, bitwidths, density=None, avg_bits=None, time_limit=ILP_TIME_LIMIT_S):
    """Exact allocation by 0/1 integer programming; returns ``(maps, info)``. See the module docstring."""
    from scipy.optimize import LinearConstraint, milp   # imported here: the CLI starts without scipy
    from scipy.sparse import csr_array, vstack

    if avg_bits is None:
        raise ParoError("the integer program needs --avg-bits (with --density alone every kept block is 8-bit)")
    choices = [0] + sorted(b for b in bitwidths if b > 0)
    blocks = sum(err[0].size for err in errors)
    # Candidate (block, bits) pairs: every choice that no cheaper choice of the same block beats.
    stacked = np.stack([np.concatenate([err[b].ravel() for err in errors]) for b in choices]).astype(np.float64)
    if density is None:
        kept = np.concatenate([_floors(err).ravel() for err in errors])              # must keep
        skipped = np.zeros(blocks, dtype=bool)                                        # must skip
    else:
        kept = np.concatenate([block_mask(block_mass(err), density).ravel() for err in errors])
        skipped = ~kept
    allowed = np.ones_like(stacked, dtype=bool)
    allowed[0] = ~kept
    allowed[1:] = ~skipped
    best = np.where(allowed[0], stacked[0], np.inf)
    for row in range(1, len(choices)):
        allowed[row] &= stacked[row] < best
        best = np.where(allowed[row], np.minimum(best, stacked[row]), best)
    block_of = np.broadcast_to(np.arange(blocks), stacked.shape)[allowed]
    bits_of = np.broadcast_to(np.array(choices)[:, None], stacked.shape)[allowed]
    cost = stacked[allowed]
    count = cost.size
    start = time.monotonic()
    shortcut = _two_choice_optimum(stacked, allowed, choices, avg_bits * blocks)
    if shortcut is not None:
        return _split_flat(shortcut, errors), {
            "solver": "exact by sorting (two choices a block, one bit step)", "status": "optimal",
            "binaries": count, "blocks": blocks, "seconds": round(time.monotonic() - start, 3), "mip_gap": 0.0}
    if count > ILP_MAX_VARIABLES:
        raise ParoError(f"the bit-allocation integer program has {count:,} binaries (over {ILP_MAX_VARIABLES:,}); "
                        f"use --allocation lagrangian for a layer this large")
    rows = [csr_array((np.ones(count), (block_of, np.arange(count))), shape=(blocks, count))]
    lower, upper = [np.ones(blocks)], [np.ones(blocks)]
    rows.append(csr_array(bits_of[None, :].astype(np.float64)))
    lower.append([-np.inf])
    upper.append([avg_bits * blocks])
    constraint = LinearConstraint(vstack(rows).tocsr(), np.concatenate(lower), np.concatenate(upper))
    scale = 1.0 / max(float(cost.max()), 1e-300)   # errors are ~1e-4: scale so HiGHS's tolerances mean something
    result = milp(cost * scale, integrality=np.ones(count), bounds=(0, 1), constraints=constraint,
                  options={"time_limit": time_limit, "mip_rel_gap": 1e-6})
    seconds = time.monotonic() - start
    if result.x is None:
        raise ParoError(f"the bit-allocation integer program found no solution ({result.message.strip()}); "
                        f"raise --avg-bits or use --allocation lagrangian")
    chosen = np.rint(result.x) > 0.5
    flat = np.zeros(blocks, dtype=np.uint8)
    flat[block_of[chosen]] = bits_of[chosen]
    maps = _split_flat(flat, errors)
    info = {"solver": "HiGHS (scipy.optimize.milp)", "status": result.message.strip(),
            "binaries": count, "blocks": blocks, "seconds": round(seconds, 3),
            "mip_gap": float(getattr(result, "mip_gap", 0.0) or 0.0)}
    return maps, info


def allocate(errors, bitwidths, density=None, avg_bits=None, method="ilp"):
    """Bitmaps per head by ``method`` (``ilp`` or ``lagrangian``) and the report's ``allocation`` dict, which
    also holds the other method's objective on the same errors when both apply (``gap``: how much more
    error the Lagrangian's plan has than the integer program's, relative)."""
    if method not in METHODS:
        raise ParoError(f"unknown allocation method {method!r}; choose one of {', '.join(METHODS)}")
    if avg_bits is None:   # density alone: every kept block at 8 bits, nothing to allocate
        maps = allocate_bits(errors, bitwidths, density, avg_bits)
        return maps, {"method": "mask only (no bit budget)", "objective": allocation_error(errors, maps)}
    start = time.monotonic()
    fast = allocate_bits(errors, bitwidths, density, avg_bits)
    info = {"lagrangian_objective": allocation_error(errors, fast),
            "lagrangian_seconds": round(time.monotonic() - start, 3)}
    if method == "lagrangian":
        return fast, {"method": "lagrangian", "objective": info["lagrangian_objective"], **info}
    maps, ilp = allocate_ilp(errors, bitwidths, density, avg_bits)
    objective = allocation_error(errors, maps)
    return maps, {"method": "ilp", "objective": objective, **info, "ilp": ilp,
                  "gap": (info["lagrangian_objective"] - objective) / max(objective, 1e-300)}
