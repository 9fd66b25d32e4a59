"""The program builder: what software hands the attention engine for one head, or a layer of heads, of a plan.

:func:`engine_program` rebuilds the head's Q/K/V from the plan's source (built-in workload or Q/K/V file,
whose SHA-256 must still match the one the plan recorded), applies the head's token order and the plan's
scales, and fills an :class:`~paro.sw.contract.EngineProgram`: the descriptor and block table the contract
defines, the bitmap, the INT8 token rows and the golden model's output codes
(:func:`paro.sw.golden.attention_head`). :func:`engine_layer` puts heads into one
:class:`~paro.sw.contract.EngineLayer` (one engine start) with the contract's default memory layout.
"""

import numpy as np

from paro.errors import ParoError

from . import golden
from .contract import EngineLayer, EngineProgram, layer_memory_map, memory_map
from .calibrate import IDENTITY
from .quant import quantize_head
from .reorder import TokenLayout, permute_tokens
from .workloads import file_sha256, make_workload

__all__ = ["engine_program", "engine_layer", "plan_workload", "head_program", "random_layer", "speculated_bitmap"]


def plan_workload(plan):
    """The workload the plan was calibrated on; a Q/K/V file that changed since is refused."""
    source = plan.source
    if source["kind"] == "synthetic":
        return make_workload(source["name"], seed=source["seed"], heads=source["heads"],
                             sample=source.get("sample", 0))
    path = source["path"]
    digest = file_sha256(path)
    if digest != source["sha256"]:
        raise ParoError(f"Q/K/V file {path!r} changed since the plan was calibrated (SHA-256 {digest[:12]}..., "
                        f"plan recorded {source['sha256'][:12]}...); recalibrate with `paro calibrate --qkv`")
    return make_workload(qkv=path, layout=TokenLayout(**source["layout"]))


def engine_program(plan, head_index, bitmap=None, workload=None, rows=None, addresses=None, spec=None,
                   own_order=False):
    """The engine program of head ``head_index`` (optionally with a replacement ``bitmap``), computing the
    query blocks ``rows`` (a range; default all; the golden codes of the others are 0), its regions at
    ``addresses`` (default: :func:`~paro.sw.contract.memory_map`), with block speculation ``spec``
    (:func:`head_program`). ``own_order``: the tokens in their natural (frame-major) order, quantised with the
    head's own scales, not the plan's order and scales (SimPicker alone)."""
    config = plan.config
    head = _quantized_head(plan, head_index, workload or plan_workload(plan), own_order)
    bitmap = plan.bitmap[head_index] if bitmap is None else np.asarray(bitmap, dtype=np.uint8)
    rows = range(bitmap.shape[0]) if rows is None else rows
    if not rows or rows.start < 0 or rows.stop > bitmap.shape[0] or rows.step != 1:
        raise ParoError(f"query-block rows {rows.start}..{rows.stop - 1} are not within the head's "
                        f"{bitmap.shape[0]} query blocks")
    return head_program(config, head, bitmap, rows, addresses, spec)


def _quantized_head(plan, head_index, workload, own_order):
    """Head ``head_index`` of ``workload`` in the plan's token order with its scales (``own_order``: in the
    natural order with the head's own scales), quantised."""
    if not 0 <= head_index < plan.heads:
        raise ParoError(f"head {head_index} out of range: the plan has {plan.heads} heads")
    order = IDENTITY if own_order else plan.orders[head_index]
    qp, kp, vp = (permute_tokens(x, plan.layout, order, axis=0) for x in workload.head(head_index))
    head, _ = quantize_head(qp, kp, vp, plan.config.block_size,
                            scales=None if own_order else plan.scales(head_index))
    return head


def speculated_bitmap(plan, head_index, spec, workload=None, dense=False, own_order=False):
    """The blocks the engine computes for head ``head_index`` with block speculation ``spec`` (``(important_code,
    negligible_code, mode)``): the plan's bitmap (``dense``: every block at 8 bits) as
    :func:`paro.sw.golden.spec_control` leaves it; no golden attention run (for the cycle model)."""
    head = _quantized_head(plan, head_index, workload or plan_workload(plan), own_order)
    blocks = plan.bitmap.shape[1]
    bitmap = np.full((blocks, blocks), 8, dtype=np.uint8) if dense else plan.bitmap[head_index]
    return _speculate(plan.config, head, bitmap, spec)


def _speculate(config, head, bitmap, spec):
    """``bitmap`` as the engine's block speculation ``spec`` (``(important_code, negligible_code, mode)``)
    leaves it for the quantised ``head`` (:func:`paro.sw.golden.spec_control`)."""
    cq, ck, shift = head.score_multipliers(config)
    important, negligible, mode = spec
    return golden.spec_control(head.q8, head.k8, cq, ck, shift, head.n_tokens, bitmap, important, negligible,
                               config, mode)


def head_program(config, head, bitmap, rows, addresses=None, spec=None):
    """The engine program of a quantised head (:class:`~paro.sw.quant.QuantizedHead`) with ``bitmap``,
    computing the query blocks ``rows``, its regions at ``addresses`` (default:
    :func:`~paro.sw.contract.memory_map`). ``spec``: ``(important_code, negligible_code, mode)`` runs the
    engine's block speculation on the bitmap (``SPEC`` = ``mode``, 1 or 2; the golden codes are those of the
    speculated bitmap, :func:`paro.sw.golden.spec_control`)."""
    cq, ck, score_shift = head.score_multipliers(config)
    speculated, fields = None, {}
    if spec is not None:
        important, negligible, mode = spec
        speculated = _speculate(config, head, bitmap, spec)
        fields = {"SPEC": mode, "SPEC_IMPORTANT": important, "SPEC_NEGLIGIBLE": negligible}
    codes, out_exp = golden.attention_head(head, bitmap if speculated is None else speculated, config, rows=rows)
    cv, ev = head.value_multipliers(config)
    descriptor = {**(addresses or memory_map(config, bitmap.shape[0])),
                  "N_TOKENS": head.n_tokens, "N_BLOCKS": bitmap.shape[0], "SCORE_SHIFT": int(score_shift),
                  "FINAL_SHIFT": int(golden.output_final_shift(ev, out_exp, config)),
                  "ROW_FIRST": rows.start, "ROW_COUNT": len(rows), **fields}
    tables = {"CQ": cq, "CK": ck, "CV8": cv[8], "CV4": cv[4]}
    return EngineProgram(descriptor, tables, bitmap, head.q8, head.k8, head.v8, codes, out_exp, speculated)


def engine_layer(plan, heads, workload=None, rows=None, dense=False, spec=None, own_order=False):
    """One engine start for ``heads`` of the plan (each computing the query blocks ``rows``); ``dense`` runs
    every block at 8 bits, none skipped (the dense INT8 baseline); ``spec`` and ``own_order`` as for
    :func:`engine_program`."""
    workload = workload or plan_workload(plan)
    blocks = plan.bitmap.shape[1]
    desc_addr, maps = layer_memory_map(plan.config, [blocks] * len(heads))
    programs = [engine_program(plan, head, bitmap=np.full((blocks, blocks), 8, dtype=np.uint8) if dense else None,
                               workload=workload, rows=rows, addresses=addresses, spec=spec, own_order=own_order)
                for head, addresses in zip(heads, maps)]
    return EngineLayer(desc_addr, programs)


def random_layer(config, bitmaps, seed, specs=None):
    """One engine start of heads with the given ``bitmaps`` over random Q/K/V (normal, seeded; every token of the
    bitmap's blocks real): the validation benches' programs. ``specs``: per head ``None`` or its block
    speculation (:func:`head_program`)."""
    rng = np.random.default_rng(seed)
    blocks = [np.asarray(b).shape[1] for b in bitmaps]
    desc_addr, maps = layer_memory_map(config, blocks)
    programs = []
    for bitmap, addresses, spec in zip(bitmaps, maps, specs or [None] * len(bitmaps)):
        n = bitmap.shape[1] * config.block_size
        q, k, v = (rng.standard_normal((n, config.head_dim)) for _ in range(3))
        head, _ = quantize_head(q, k, v, config.block_size)
        programs.append(head_program(config, head, np.asarray(bitmap, dtype=np.uint8), range(bitmap.shape[0]),
                                     addresses, spec))
    return EngineLayer(desc_addr, programs)
