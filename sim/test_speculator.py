"""cocotb bench of SimPicker's speculator (``hw/speculator.py``, 8 lanes) against ``sw.golden``: the pooled
rows of random heads (``pooled_codes`` of random INT8 Q and K), their multipliers, a plan row per query
block, the golden chain ``speculation_scores`` -> ``speculation_masses`` -> ``speculation_classes``;
back-pressure on ``o``; every class and ``last`` compared."""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge

from paro.hw.speculation import class_layout
from paro.hw.speculator import key_layout, row_layout
from paro.sim.streams import StreamSink, bench_config, bench_rng, reset, start_clock
from paro.sw.golden import (SPEC_FRAC_BITS, pooled_codes, speculation_classes, speculation_masses,
                            speculation_scores)


async def run_head(dut, rng, config, sink, stall):
    B, d = config.block_size, config.head_dim
    blocks = rng.randint(1, config.max_blocks)
    n_tokens = (blocks - 1) * B + rng.randint(1, B)
    nrng = np.random.default_rng(rng.randint(0, 2**31))
    q8 = nrng.integers(-127, 128, (blocks * B, d)) // nrng.integers(1, 4, (blocks * B, 1))
    k8 = nrng.integers(-127, 128, (blocks * B, d)) + nrng.integers(-40, 41, (blocks, 1)).repeat(B, axis=0)
    k8 = np.clip(k8, -127, 127)
    cq, ck = nrng.integers(1, 1 << 15, blocks), nrng.integers(1, 1 << 15, blocks)
    shift = rng.randint(12, 40)
    allowed = nrng.random((blocks, blocks)) < 0.8
    one = 1 << SPEC_FRAC_BITS
    negligible = rng.randint(0, one // 4)
    important = rng.randint(negligible + 1, one)
    x = speculation_scores(q8, k8, cq, ck, shift, B)
    keys = np.clip(n_tokens - np.arange(blocks) * B, 0, B)
    want = speculation_classes(speculation_masses(x, keys, config, allowed), important, negligible)
    pooled_q, pooled_k = pooled_codes(q8, B), pooled_codes(k8, B)
    dut.important.value, dut.negligible.value = important, negligible
    rows, keys_layout, classes = row_layout(config), key_layout(config), class_layout()
    dut.k_wr_en.value = 1
    for j in range(blocks):
        dut.k_wr_addr.value = j
        dut.k_wr_data.value = keys_layout.const({"k": pooled_k[j].tolist(), "ck": int(ck[j])}).as_bits()
        await RisingEdge(dut.clk)
    dut.k_wr_en.value = 0
    for i in range(blocks):
        dut.i__valid.value = 1
        dut.i__payload.value = rows.const({"q": pooled_q[i].tolist(), "cq": int(cq[i]), "shift": shift,
                                           "n_blocks": blocks, "n_tokens": n_tokens,
                                           "allowed": sum(int(a) << j for j, a in enumerate(allowed[i]))}).as_bits()
        while True:
            await FallingEdge(dut.clk)
            taken = dut.i__ready.value == 1
            await RisingEdge(dut.clk)
            if taken:
                break
        dut.i__valid.value = 0
        while len(sink.beats) < blocks:
            await RisingEdge(dut.clk)
        got = [classes.from_bits(bits) for bits in sink.beats]
        sink.beats.clear()
        assert [int(b.cls) for b in got] == want[i].tolist(), f"row {i}: got {[int(b.cls) for b in got]}, golden {want[i].tolist()}"
        assert [bool(b.last) for b in got] == [j == blocks - 1 for j in range(blocks)]


async def run_heads(dut, name, stall, heads=4):
    config = bench_config()
    rng = bench_rng(name)
    await start_clock(dut)
    dut.i__valid.value, dut.k_wr_en.value = 0, 0
    await reset(dut)
    sink = StreamSink(dut, "o", rng, stall=stall)
    cocotb.start_soon(sink.run())
    for _ in range(heads):
        await run_head(dut, rng, config, sink, stall)
    dut._log.info(f"{heads} heads speculated bit-exact")


@cocotb.test()
async def speculator_heads(dut):
    """Random heads, no back-pressure."""
    await run_heads(dut, "speculator_heads", stall=0.0)


@cocotb.test()
async def speculator_back_pressure(dut):
    """Random heads, back-pressure on the classes."""
    await run_heads(dut, "speculator_back_pressure", stall=0.4)
