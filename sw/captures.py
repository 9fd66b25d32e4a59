"""Q/K/V captures of a model, one file per denoising step and layer, and calibration of a plan set from them.

A capture folder holds ``step<SSSS>_layer<LLL>.npz`` files (:func:`capture_name`; what ``paro capture``
writes), each with ``q``, ``k``, ``v`` of shape (heads, tokens, head_dim) in frame-major token order, as
``paro calibrate --qkv`` reads them. Every layer must have a file for every step.

:func:`calibrate_captures` makes one plan per (layer, timestep group), PAROAttention's static plans: the
steps are split into ``groups`` runs of consecutive steps; each group's plan is calibrated on its middle
step and evaluated on every other step of the group as held-out data (the report gives both). The result
is a :class:`paro.sw.plan.PlanSet`.
"""

import re
from pathlib import Path

import numpy as np

from paro.errors import ParoError

from .calibrate import calibrate
from .plan import PlanSet
from .workloads import make_workload

__all__ = ["capture_name", "find_captures", "step_groups", "calibrate_captures"]

_NAME = re.compile(r"^step(\d+)_layer(\d+)\.npz$")


def capture_name(step, layer):
    """File name of the capture of ``layer`` at denoising step ``step``."""
    return f"step{step:04d}_layer{layer:03d}.npz"


def find_captures(folder):
    """``{(step, layer): path}`` of a capture folder; a folder without a full (step x layer) grid of
    captures is a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ParoError(f"capture folder {str(folder)!r} does not exist")
    found = {}
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found[(int(match[1]), int(match[2]))] = path
    if not found:
        raise ParoError(f"capture folder {str(folder)!r} holds no files named stepSSSS_layerLLL.npz "
                        f"(as `paro capture` writes them)")
    steps = sorted({s for s, _ in found})
    layers = sorted({layer for _, layer in found})
    missing = [(s, layer) for s in steps for layer in layers if (s, layer) not in found]
    if missing:
        s, layer = missing[0]
        raise ParoError(f"capture folder {str(folder)!r} has no {capture_name(s, layer)} ({len(missing)} of "
                        f"{len(steps) * len(layers)} step/layer files missing); every layer needs every step")
    return found


def step_groups(steps, groups):
    """``steps`` (sorted, unique) split into ``groups`` runs of consecutive steps, as equal as possible."""
    steps = sorted(set(steps))
    if not 1 <= groups <= len(steps):
        raise ParoError(f"--step-groups must be in [1, {len(steps)}] for {len(steps)} captured steps, got {groups}")
    return [list(map(int, part)) for part in np.array_split(np.array(steps), groups)]


def calibrate_captures(folder, layout, make_config, density=None, avg_bits=None, groups=1, heads=None,
                       allocation="ilp", log=None, error_metric="probability", jobs=None):
    """One plan per (layer, timestep group) of the captures in ``folder``; returns ``(PlanSet, report)``.
    ``make_config(workload)`` gives the accelerator config from the first capture loaded (its head_dim and
    heads), so no file is read twice. ``jobs``: as for :func:`sw.calibrate.calibrate`."""
    found = find_captures(folder)
    layers = sorted({layer for _, layer in found})
    parts = step_groups([s for s, _ in found], groups)
    config, entries, plans, reports = None, [], [], []
    for layer in layers:
        for group, steps in enumerate(parts):
            middle = steps[len(steps) // 2]
            other_steps = [s for s in steps if s != middle]
            workload = make_workload(qkv=found[(middle, layer)], layout=layout, heads=heads)
            others = [make_workload(qkv=found[(s, layer)], layout=layout, heads=heads) for s in other_steps]
            config = config or make_config(workload)
            if log:
                log(f"layer {layer}, steps {steps[0]}..{steps[-1]}: calibrating on step {middle}")
            plan, report = calibrate(workload, config, density=density, avg_bits=avg_bits, log=log,
                                     allocation=allocation, holdout=others or None, error_metric=error_metric,
                                     jobs=jobs)
            entries.append({"layer": layer, "group": group, "steps": steps})
            plans.append(plan)
            reports.append({
                "layer": layer, "group": group, "steps": steps, "calibrated_on_step": middle,
                "density": report["density"], "avg_bits": report["avg_bits"], "orders": plan.orders,
                "cosine": report["cosine"], "rel_l1": report["rel_l1"],
                "heldout": [{"step": s, "cosine": h["cosine"], "rel_l1": h["rel_l1"]}
                            for s, h in zip(other_steps, report.get("heldout") or [])],
            })
    cosines = [r["cosine"] for r in reports] + [h["cosine"] for r in reports for h in r["heldout"]]
    summary = {"captures": str(Path(folder).resolve()), "layers": layers, "step_groups": parts,
               "budget": {"density": density, "avg_bits": avg_bits}, "config": config.to_dict(),
               "cosine_min": min(cosines), "entries": reports}
    return PlanSet(entries, plans), summary
