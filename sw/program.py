"""What software hands the attention engine for one head of a plan, and what must come back.

:func:`engine_program` rebuilds the head's Q/K/V from the plan's source (built-in workload or Q/K/V file),
applies the head's token order and the plan's scales, and returns the register values, the multiplier
tables, the bitmap, the INT8 token rows and the golden model's output codes (:func:`sw.golden.attention_head`).
"""

import dataclasses

import numpy as np

from paro.errors import ParoError

from . import golden
from .quant import quantize_head
from .reorder import TokenLayout, permute_tokens
from .workloads import make_workload

__all__ = ["EngineProgram", "engine_program", "plan_workload", "save_program"]


@dataclasses.dataclass
class EngineProgram:
    registers: dict          # N_TOKENS, N_BLOCKS, SCORE_SHIFT, FINAL_SHIFT
    tables: dict             # CQ, CK, CV8, CV4: int arrays per block
    bitmap: np.ndarray       # uint8 [nq, nk]
    q8: np.ndarray           # int64 [padded tokens, d]
    k8: np.ndarray
    v8: np.ndarray
    codes: np.ndarray        # expected output codes [padded tokens, d]
    out_exp: int


def plan_workload(plan):
    source = plan.source
    layout = TokenLayout(**source["layout"])
    if source["kind"] == "synthetic":
        return make_workload(source["name"], seed=source["seed"], heads=source["heads"])
    if source["kind"] == "file":
        return make_workload(qkv=source["path"], layout=layout)
    raise ParoError(f"plan source kind {source['kind']!r} is unknown; recalibrate the plan")


def engine_program(plan, head_index, bitmap=None, workload=None):
    """The engine program of head ``head_index`` (optionally with a replacement ``bitmap``)."""
    if not 0 <= head_index < plan.heads:
        raise ParoError(f"head {head_index} out of range: the plan has {plan.heads} heads")
    config = plan.config
    workload = workload or plan_workload(plan)
    q, k, v = workload.head(head_index)
    order = plan.orders[head_index]
    qp, kp, vp = (permute_tokens(x, plan.layout, order, axis=0) for x in (q, k, v))
    head, _ = quantize_head(qp, kp, vp, config.block_size, scales=plan.scales(head_index))
    bitmap = plan.bitmap[head_index] if bitmap is None else np.asarray(bitmap, dtype=np.uint8)
    codes, out_exp = golden.attention_head(head, bitmap, config)
    cq, ck, score_shift = head.score_multipliers(config)
    cv, ev = head.value_multipliers(config)
    final_shift = golden.output_final_shift(ev, out_exp, config)
    registers = {"N_TOKENS": head.n_tokens, "N_BLOCKS": bitmap.shape[0], "SCORE_SHIFT": int(score_shift),
                 "FINAL_SHIFT": int(final_shift)}
    tables = {"CQ": cq, "CK": ck, "CV8": cv[8], "CV4": cv[4]}
    return EngineProgram(registers, tables, bitmap, head.q8, head.k8, head.v8, codes, out_exp)


def save_program(prog, path):
    """Write ``prog`` as an ``.npz`` the cocotb bench reads (no pickles; registers as JSON bytes)."""
    import json
    np.savez(path, q8=prog.q8, k8=prog.k8, v8=prog.v8, bitmap=prog.bitmap, codes=prog.codes,
             registers_json=np.frombuffer(json.dumps(prog.registers).encode(), dtype=np.uint8),
             **{f"table_{name}": np.asarray(values, dtype=np.int64) for name, values in prog.tables.items()})
