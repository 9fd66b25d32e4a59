"""SimPicker's run-time decisions for one head, on the integers of ``sw.golden`` (docs/simpicker.md).

* **Speculation** (:func:`paro.sw.golden.speculation_classes` on the masses that block-reduced scores
  estimate, :func:`paro.sw.golden.speculation_masses`): every (query block,
  key block) is important (full path), unimportant (a cheaper path: the LUT path, K at 4 bits for QK^T and
  FP numerators x INT8 V through the LUT multiplier for PV; or PARO's 4-bit mode; or the full path) or
  negligible (skipped).
* **Token reuse** (:func:`paro.sw.golden.reuse_anchors`): a video token compares its query with its anchor
  through the token at the same (height, width) one frame earlier; a close one takes the anchor's output.
* **Grouping**: the rows a query block still computes after reuse are packed into dense array groups.

Methods: ``paro`` (the static plan alone), ``simpicker`` (SimPicker alone, frame-major token order, every
block a candidate at 8 bits), ``both`` (SimPicker within a PARO plan: its order, scales, and bitmap, whose
dropped blocks stay dropped and whose bitwidths the important blocks keep). Every decision is a pure function
of the INT8 codes and the parameters, so a run is reproducible; :func:`simpicker_head` returns all of them.
"""

import dataclasses
import math

import numpy as np

from paro.config import PACKING
from paro.errors import ParoError

from . import golden
from .calibrate import IDENTITY, evaluation_blocks
from .calibrate import dense_rows
from .calibrate import _Metrics as Metrics
from .quant import quantize_head
from .reorder import permutation_indices, permute_tokens

__all__ = ["METHODS", "UNIMPORTANT_PATHS", "SimPickerParams", "frame_references", "simpicker_head", "array_groups", "head_ideal_cycles",
           "evaluate"]

METHODS = ("paro", "simpicker", "both")
#: Paths of SimPicker's unimportant blocks (:class:`SimPickerParams`).
UNIMPORTANT_PATHS = ("lut", "low", "full")


@dataclasses.dataclass(frozen=True)
class SimPickerParams:
    """SimPicker's thresholds and switches (the ablation turns mechanisms off one by one).

    important_mass, negligible_mass
        Speculation on each query block row's estimated block masses: the largest blocks that make up
        ``important_mass`` of the row's estimated mass are important, the smallest ones whose mass adds up to
        at most ``negligible_mass`` are skipped, the rest is unimportant; fractions with
        ``0 <= negligible_mass < important_mass <= 1``. Within a PARO plan (``both``) the plan has already
        dropped the tail: :meth:`for_method` then skips nothing more (``negligible_mass = 0``) unless told.
    reuse_threshold
        Token reuse when ``|q_t - q_anchor| <= reuse_threshold * |q_anchor|`` (relative L2 of the dequantised
        queries); in [0, 1]; 0 turns reuse off.
    unimportant
        The path of unimportant blocks (:data:`UNIMPORTANT_PATHS`): ``lut`` (QK^T with K at 4 bits, PV
        through the LUT multiplier: ``LUT_BLOCK``), ``low`` (PARO's 4-bit mode for QK^T and PV: the block at
        ``min(bits, 4)``; 2-bit blocks stay) or ``full`` (the block's own bits: speculation only skips).
    grouping
        Pack the rows left after reuse into dense array groups; when off a group of rows is skipped only when
        every row of it is reused.
    """
    important_mass: float = 0.8
    negligible_mass: float = 0.02
    reuse_threshold: float = 0.1
    unimportant: str = "lut"
    grouping: bool = True

    def __post_init__(self):
        for name in ("important_mass", "negligible_mass", "reuse_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ParoError(f"{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ParoError(f"{name} must be >= 0, got {value}")
        for name in ("important_mass", "negligible_mass", "reuse_threshold"):
            if getattr(self, name) > 1:
                raise ParoError(f"{name} must be in [0, 1] (a fraction), got {getattr(self, name)}")
        if self.unimportant not in UNIMPORTANT_PATHS:
            raise ParoError(f"unimportant path {self.unimportant!r} is not one of {', '.join(UNIMPORTANT_PATHS)}")
        if self.negligible_mass >= self.important_mass:
            raise ParoError(f"negligible_mass {self.negligible_mass} must be below important_mass "
                            f"{self.important_mass}")

    @classmethod
    def for_method(cls, method, **values):
        """The parameters for ``method`` with the given values (``None``: the default); ``both`` defaults
        ``negligible_mass`` to 0: the plan's 0-bit blocks are its skips, and skipping more of the mass it keeps
        costs quality on data the plan was not calibrated on (docs/simpicker.md)."""
        values = {key: value for key, value in values.items() if value is not None}
        if method == "both":
            values.setdefault("negligible_mass", 0.0)
        return cls(**values)

    def codes(self, config):
        """The integer thresholds the golden functions take: the mass fractions in units of
        ``2**-SPEC_FRAC_BITS`` and ``tau**2`` in units of ``2**-REUSE_FRAC_BITS``."""
        one = 1 << golden.SPEC_FRAC_BITS
        return (round(self.important_mass * one), round(self.negligible_mass * one),
                round(self.reuse_threshold ** 2 * (1 << golden.REUSE_FRAC_BITS)))

    def to_dict(self):
        return dataclasses.asdict(self)


def frame_references(layout, order):
    """Per token of the head's order (``order``, one of the six permutations), the position (same order) of
    the token at the same (height, width) one frame earlier; -1 for text tokens and the first frame."""
    index = permutation_indices(layout, order)
    natural = np.full(layout.tokens, -1, dtype=np.int64)
    plane = layout.height * layout.width
    video = np.arange(layout.text_tokens + plane, layout.tokens)
    natural[video] = video - plane
    position = np.argsort(index)                      # natural token -> its position in the order
    ref = natural[index]
    return np.where(ref >= 0, position[np.maximum(ref, 0)], -1)


def simpicker_head(head, layout, order, config, params, plan_bits=None, rows=None):
    """SimPicker's decisions and output codes for one quantised head (:class:`paro.sw.quant.QuantizedHead`,
    tokens in ``order``). ``plan_bits``: a PARO plan's bitmap (``both``), else every block is a candidate at
    8 bits. ``rows``: the query blocks whose outputs are wanted (default all; the blocks their reused rows'
    anchors are in are computed as well, other blocks' codes are 0). Returns a dict: ``classes`` (per block,
    ``SPEC_*``), ``bitmap`` (the block codes the golden model runs: bits, ``LUT_BLOCK`` or 0), ``anchor``
    (per real token), ``computed``, ``codes`` (padded tokens, d) with reused rows copied from their anchors,
    and ``out_exp``."""
    B, n = config.block_size, head.n_tokens
    blocks = head.q8.shape[0] // B
    important_code, negligible_code, tau_code = params.codes(config)
    cq, ck, shift = head.score_multipliers(config)
    x = golden.speculation_scores(head.q8, head.k8, cq, ck, shift, B)
    allowed = None if plan_bits is None else np.asarray(plan_bits)
    if allowed is not None and allowed.shape != (blocks, blocks):
        raise ParoError(f"the plan's bitmap is {allowed.shape}, the head has {blocks} x {blocks} blocks")
    key_tokens = np.clip(n - np.arange(blocks) * B, 0, B)
    masses = golden.speculation_masses(x, key_tokens, config, allowed)
    classes = golden.speculation_classes(masses, important_code, negligible_code)
    bits = np.full((blocks, blocks), 8, dtype=np.int64) if allowed is None else allowed.astype(np.int64)
    cheap = {"lut": np.full_like(bits, golden.LUT_BLOCK), "low": golden.low_bit_blocks(bits),
             "full": bits}[params.unimportant]
    bitmap = np.where(classes == golden.SPEC_FULL, bits, np.where(classes == golden.SPEC_LUT, cheap, 0))

    q_mult, _ = golden.int_multipliers(head.q_scale)
    reference = frame_references(layout, order) if tau_code else np.full(n, -1, dtype=np.int64)
    anchor = golden.reuse_anchors(head.q8, q_mult, reference, tau_code, B)
    computed = anchor == np.arange(n)
    wanted = np.zeros(blocks, dtype=bool)
    wanted[list(range(blocks)) if rows is None else list(rows)] = True
    token_wanted = np.repeat(wanted, B)[:n]
    wanted[np.unique(anchor[token_wanted] // B)] = True
    codes = np.zeros((blocks * B, config.head_dim), dtype=np.int64)
    for i in np.flatnonzero(wanted):
        if i * B < n and computed[i * B:(i + 1) * B].any():
            codes[i * B:(i + 1) * B] = golden.attention_block_row(i, head, bitmap[i], config)
    codes[:n] = np.where(token_wanted[:, None], codes[anchor], codes[:n])
    return {"x": x, "classes": classes, "bitmap": bitmap, "anchor": anchor, "computed": computed,
            "codes": codes, "out_exp": head.out_exp(config)}


def array_groups(computed_rows, size, grouping):
    """Array groups of ``size`` query rows a query block needs for its ``computed_rows`` (bool, B): packed by
    :func:`paro.sw.golden.row_packer` (``ceil(count / size)``) with grouping, else the aligned groups holding
    at least one computed row."""
    computed_rows = np.asarray(computed_rows, dtype=bool)
    if grouping:                                   # the row packer's groups (hw/row_packer.py)
        return sum(1 for _, group_end, _, empty in golden.row_packer(computed_rows, size) if group_end and not empty)
    return int(computed_rows.reshape(-1, size).any(axis=1).sum())


def head_ideal_cycles(bitmap, computed, config, grouping):
    """Ideal cycles of one head under SimPicker's decisions (analytical, every unit busy every cycle):
    ``array`` (QK^T tiles of R queries x ``C << packing`` keys over d beats, PV tiles of R dimensions x
    ``C << packing`` queries over B beats, for the computed query rows only), ``lut`` (the LUT multiplier's
    PV of LUT-path blocks: ``rows x B x d / lut_lanes``, beside the array), ``speculation`` (the pooled
    QK^T on the array) and ``total = max(array, lut) + speculation``."""
    R, C, B, d = config.rows, config.cols, config.block_size, config.head_dim
    bitmap = np.asarray(bitmap)
    rows = np.zeros(bitmap.shape[0] * B, dtype=bool)
    rows[:len(computed)] = computed
    array = lut = 0
    for i, row in enumerate(bitmap):
        mine = rows[i * B:(i + 1) * B]
        if not mine.any():
            continue
        for code in row[row > 0]:
            qk_bits = golden.LUT_QK_BITS if code == golden.LUT_BLOCK else int(code)
            width = C << PACKING[qk_bits]
            array += array_groups(mine, R, grouping) * (B // width) * d
            if code == golden.LUT_BLOCK:
                lut += int(mine.sum()) * B * -(-d // config.lut_lanes)
            else:
                width = C << PACKING[int(code)]
                array += (d // R) * array_groups(mine, width, grouping) * B
    speculation = -(-bitmap.shape[0] // R) * -(-bitmap.shape[1] // C) * d
    return {"array": array, "lut": lut, "speculation": speculation, "total": max(array, lut) + speculation}


def _head_inputs(qkv, layout, order, config, scales):
    permuted = tuple(permute_tokens(x, layout, order, axis=0) for x in qkv)
    head, _ = quantize_head(*permuted, config.block_size, scales=scales)
    return head


def evaluate(workload, config, params, method, plan=None, scales_from_plan=True, progress=None):
    """Run ``method`` (:data:`METHODS`) on every head of ``workload``: SimPicker's decisions, the golden
    model's outputs against fp64 dense attention (``cosine``, ``rel_l1``, over the query blocks of
    :func:`~paro.sw.calibrate.evaluation_blocks`), the decisions' statistics and the ideal cycles of
    :func:`head_ideal_cycles` with and without grouping. ``plan`` (a :class:`~paro.sw.plan.BlockPlan`) is
    needed for ``paro`` and ``both``; its scales quantise the data when ``scales_from_plan`` (the calibration
    data), else each head's own (held-out data). Returns a dict (JSON-able)."""
    if method not in METHODS:
        raise ParoError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "simpicker" and plan is None:
        raise ParoError(f"--method {method} needs a PARO plan")
    B, layout = config.block_size, workload.layout
    totals, per_head = Metrics(), []
    sums = {"blocks": 0, "full": 0, "lut": 0, "skip": 0, "tokens": 0, "reused": 0, "dense_cycles": 0,
            "speculation_cycles": 0, "cycles": 0, "cycles_without_grouping": 0, "array_cycles": 0, "lut_cycles": 0}
    for h in range(workload.heads):
        qkv = workload.head(h)
        order = IDENTITY if method == "simpicker" else plan.orders[h]
        scales = plan.scales(h) if plan is not None and scales_from_plan and method != "simpicker" else None
        head = _head_inputs(qkv, layout, order, config, scales)
        blocks = head.q8.shape[0] // B
        live = np.zeros((blocks, blocks), dtype=bool)
        live[:, :-(-head.n_tokens // B)] = True
        if method == "paro":
            bitmap = plan.bitmap[h].astype(np.int64)
            result = {"bitmap": bitmap, "classes": np.where(bitmap > 0, golden.SPEC_FULL, golden.SPEC_SKIP),
                      "computed": np.ones(head.n_tokens, dtype=bool), "anchor": np.arange(head.n_tokens),
                      "codes": golden.attention_head(head, bitmap, config, rows=evaluation_blocks(blocks))[0],
                      "out_exp": head.out_exp(config)}
        else:
            result = simpicker_head(head, layout, order, config, params,
                                    plan_bits=plan.bitmap[h] if method == "both" else None,
                                    rows=evaluation_blocks(blocks))
        if method == "both":
            live &= plan.bitmap[h] > 0
        index = permutation_indices(layout, order)
        rows = evaluation_blocks(blocks)
        positions = np.concatenate([np.arange(i * B, min((i + 1) * B, head.n_tokens)) for i in rows])
        out = result["codes"][positions].astype(np.float64) * 2.0 ** -result["out_exp"]
        ref = dense_rows(*qkv, index[positions], config)
        totals.add(out, ref)
        cosine, rel_l1 = Metrics().add(out, ref).result()
        grouped = head_ideal_cycles(result["bitmap"], result["computed"], config, params.grouping)
        ungrouped = head_ideal_cycles(result["bitmap"], result["computed"], config, False)
        if method == "paro":
            grouped["speculation"] = ungrouped["speculation"] = 0
            grouped["total"], ungrouped["total"] = grouped["array"], ungrouped["array"]
        classes = result["classes"][live]
        stats = {"full": int((classes == golden.SPEC_FULL).sum()), "lut": int((classes == golden.SPEC_LUT).sum()),
                 "skip": int((classes == golden.SPEC_SKIP).sum())}
        reused = int((~result["computed"]).sum())
        dense = 2 * blocks * blocks * B * B * config.head_dim // (config.rows * config.cols)
        per_head.append({"head": h, "order": order, "cosine": cosine, "rel_l1": rel_l1, "blocks": int(live.sum()),
                         **stats, "reused_tokens": reused, "tokens": head.n_tokens, "cycles": grouped,
                         "cycles_without_grouping": ungrouped["total"], "dense_int8_cycles": dense})
        for key, value in (("blocks", int(live.sum())), ("full", stats["full"]), ("lut", stats["lut"]),
                           ("skip", stats["skip"]), ("tokens", head.n_tokens), ("reused", reused),
                           ("dense_cycles", dense), ("speculation_cycles", grouped["speculation"]),
                           ("cycles", grouped["total"]), ("cycles_without_grouping", ungrouped["total"]),
                           ("array_cycles", grouped["array"]), ("lut_cycles", grouped["lut"])):
            sums[key] += value
        if progress:
            progress()
    cosine, rel_l1 = totals.result()
    return {
        "method": method, "params": params.to_dict(), "workload": workload.source(),
        "cosine": cosine, "rel_l1": rel_l1,
        "fractions": {"full": sums["full"] / sums["blocks"], "lut": sums["lut"] / sums["blocks"],
                      "skip": sums["skip"] / sums["blocks"]},
        "reused_tokens": sums["reused"] / sums["tokens"],
        "ideal_cycles": sums["cycles"], "ideal_cycles_without_grouping": sums["cycles_without_grouping"],
        "array_cycles": sums["array_cycles"], "lut_cycles": sums["lut_cycles"],
        "speculation_cycles": sums["speculation_cycles"],
        "speculation_overhead": sums["speculation_cycles"] / max(sums["cycles"], 1),
        "dense_int8_cycles": sums["dense_cycles"],
        "speedup_vs_dense_int8": sums["dense_cycles"] / max(sums["cycles"], 1),
        "units": {"ideal_cycles": "analytical (sw.simpicker.head_ideal_cycles): every unit busy every cycle, "
                                  "not RTL (the engine runs block speculation only: paro simulate --method)",
                  "fractions": "of the blocks each method could compute (real keys; for both, the plan's kept)",
                  "cosine, rel_l1": "golden-model output vs fp64 dense attention, evaluation query blocks"},
        "heads": per_head,
    }
