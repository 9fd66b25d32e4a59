"""cocotb benches of the attention engine (``hw/top.py``) on whole heads, bit for bit against ``sw.golden``.

The plan, head and case come from the environment (``PARO_PLAN``, ``PARO_HEAD``, ``PARO_CASE``); the pytest
functions below calibrate real plans on the ``tiny`` workload and derive the special cases from them.
Every stream has random valid gaps (``kv``, ``q``) or random ready back-pressure (``o``).
"""

import json
import os

import cocotb
import numpy as np
import pytest
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from hw.top import CSR, engine_limits
from sim.streams import CLOCK_NS, StreamSink, StreamSource, bench_config, bench_rng, reset, start_clock


async def csr_write(dut, address, value):
    dut.csr_we.value = 1
    dut.csr_addr.value = address
    dut.csr_wdata.value = int(value) & 0xFFFFFFFF
    await RisingEdge(dut.clk)
    dut.csr_we.value = 0


async def csr_read(dut, address):
    dut.csr_addr.value = address
    await FallingEdge(dut.clk)
    value = int(dut.csr_rdata.value)
    await RisingEdge(dut.clk)
    return value


async def program(dut, config, prog):
    nb = engine_limits(config)["max_blocks"]
    for name, value in prog["registers"].items():
        await csr_write(dut, CSR[name], value)
    for name, values in prog["tables"].items():
        for index, value in enumerate(values):
            await csr_write(dut, CSR[name] + index, value)
    bitmap = np.asarray(prog["bitmap"])
    for i in range(bitmap.shape[0]):
        for j in range(bitmap.shape[1]):
            await csr_write(dut, CSR["BITMAP"] + i * nb + j, bitmap[i, j])


def row_beats(layout, rows):
    return [layout.const({"k": [int(x) for x in kr], "v": [int(x) for x in vr]}).as_bits() for kr, vr in rows]


async def run_head(dut, config, prog, rng, gap=0.2, stall=0.2):
    """Program, start, stream the head through and return (output beats, counters)."""
    from hw.top import AttentionEngine
    engine = AttentionEngine(config)
    engine._MustUse__silence = True
    kv_layout = engine.kv.payload.shape()
    q_layout = engine.q.payload.shape()
    o_layout = engine.o.payload.shape()
    await program(dut, config, prog)
    kv = StreamSource(dut, "kv", rng, gap)
    q = StreamSource(dut, "q", rng, gap)
    sink = StreamSink(dut, "o", rng, stall)
    await csr_write(dut, CSR["START"], 1)
    kv_beats = row_beats(kv_layout, zip(prog["k8"], prog["v8"]))
    q_beats = [q_layout.const({"q": [int(x) for x in row]}).as_bits() for row in prog["q8"]]
    cocotb.start_soon(kv.send(kv_beats))
    cocotb.start_soon(q.send(q_beats))
    sink_task = cocotb.start_soon(sink.run())
    limit = prog["cycle_limit"]
    try:
        await with_timeout(RisingEdge(dut.done), limit * CLOCK_NS, "ns")
    except SimTimeoutError:
        raise AssertionError(f"engine not done after {limit} cycles; {len(sink.beats)} output beats") from None
    await RisingEdge(dut.clk)
    sink_task.cancel()
    counters = {name: await csr_read(dut, CSR[name])
                for name in ("CYCLES", "ARRAY_BEATS", "STALL_CYCLES", "KEPT8", "KEPT4", "SKIPPED")}
    views = [o_layout.from_bits(v) for v in sink.beats]
    return views, counters


def expected_beats(config, codes):
    rows, d = config.rows, config.head_dim
    return [[int(x) for x in codes[q, g * rows:(g + 1) * rows]] for q in range(codes.shape[0]) for g in range(d // rows)]


def load_program(path):
    with np.load(path, allow_pickle=False) as npz:
        prog = {name: npz[name] for name in npz.files}
    prog["registers"] = json.loads(prog.pop("registers_json").tobytes().decode())
    prog["tables"] = {name: prog.pop(f"table_{name}") for name in ("CQ", "CK", "CV8", "CV4")}
    prog["cycle_limit"] = int(os.environ.get("PARO_CYCLE_LIMIT", "2000000"))
    return prog


@cocotb.test()
async def engine_heads_bit_exact(dut):
    """Every program in $PARO_PROGRAMS: a whole head, output codes equal to the golden model's."""
    config = bench_config()
    rng = bench_rng("engine_heads_bit_exact")
    gap = float(os.environ.get("PARO_GAP", "0.2"))
    outs = os.environ.get("PARO_COUNTERS_OUT", "").split(os.pathsep)
    await start_clock(dut)
    dut.csr_we.value = 0
    for n, path in enumerate(os.environ["PARO_PROGRAMS"].split(os.pathsep)):
        prog = load_program(path)
        await reset(dut)
        views, counters = await run_head(dut, config, prog, rng, gap=gap, stall=gap)
        expected = expected_beats(config, prog["codes"])
        got = [[view.o[r] for r in range(config.rows)] for view in views]
        assert len(got) == len(expected), f"program {n}: {len(got)} output beats, expected {len(expected)}"
        for beat, (g, e) in enumerate(zip(got, expected)):
            assert g == e, (f"program {n}, output beat {beat} (query {beat // (config.head_dim // config.rows)}): "
                            f"got {g}, golden {e}")
        assert views[-1].last == 1 and all(v.last == 0 for v in views[:-1])
        bitmap = prog["bitmap"]
        assert counters["KEPT8"] == int((bitmap == 8).sum())
        assert counters["KEPT4"] == int((bitmap == 4).sum())
        assert counters["SKIPPED"] == int((bitmap == 0).sum())
        cocotb.log.info("program %d: %s", n, counters)
        if n < len(outs) and outs[n]:
            with open(outs[n], "w") as f:
                json.dump(counters, f)


def _tiny_plan(tmp_path):
    from paro.cli import main
    path = tmp_path / "tiny.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "-o", str(path)]) == 0
    from sw.plan import load_plan
    return load_plan(path)


def test_engine_tiny_heads(simulator, tmp_path):
    """Whole tiny heads from a real plan: mixed, all-8-bit dense, one kept block per row, every bitwidth."""
    from paro.simulate import run_programs
    from sw.program import engine_program, plan_workload
    plan = _tiny_plan(tmp_path)
    workload = plan_workload(plan)
    nb = plan.bitmap.shape[1]
    mixed = engine_program(plan, 1, workload=workload)
    assert {0, 4, 8} <= set(np.unique(mixed.bitmap).tolist()), "the mixed plan must use every bitwidth"
    one_block = np.zeros((nb, nb), dtype=np.uint8)
    one_block[np.arange(nb), (np.arange(nb) + 1) % nb] = np.where(np.arange(nb) % 2, 4, 8)
    programs = [mixed,
                engine_program(plan, 0, bitmap=np.full((nb, nb), 8, dtype=np.uint8), workload=workload),
                engine_program(plan, 2, bitmap=one_block, workload=workload),
                engine_program(plan, 3, workload=workload)]
    counters = run_programs(plan.config, programs, simulator, tag="tiny")
    assert counters[1]["KEPT8"] == nb * nb and counters[1]["SKIPPED"] == 0
    assert counters[2]["KEPT8"] + counters[2]["KEPT4"] == nb


def test_engine_small_head_verilator(verilator, tmp_path):
    """A head of the small workload calibrated at density 0.25 (Verilator only: ~1.7M cycles)."""
    from paro.cli import main
    from paro.simulate import run_programs
    from sw.plan import load_plan
    from sw.program import engine_program
    path = tmp_path / "small.npz"
    assert main(["calibrate", "--workload", "small", "--heads", "2", "--density", "0.25", "--avg-bits", "1.5",
                 "-o", str(path)]) == 0
    plan = load_plan(path)
    prog = engine_program(plan, 1)           # a temporal head, reordered HWF
    (counters,) = run_programs(plan.config, [prog], verilator, gap=0.1, tag="small")
    assert counters["KEPT4"] > 0 and counters["KEPT8"] > 0


def test_engine_mismatch_is_reported(verilator, tmp_path):
    """A single wrong expected code makes the run fail: bit-exactness is checked, not assumed."""
    from paro.errors import ParoError
    from paro.simulate import run_programs
    from sw.program import engine_program
    plan = _tiny_plan(tmp_path)
    prog = engine_program(plan, 0)
    prog.codes = prog.codes.copy()
    prog.codes[5, 3] += 1
    with pytest.raises((ParoError, SystemExit)):
        run_programs(plan.config, [prog], verilator, tag="mismatch")   # own build folder: no race
