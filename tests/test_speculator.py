"""SimPicker's speculator (``hw/speculator.py``: pooled products, scaling, the speculation unit) against the
golden chain ``speculation_scores`` -> ``speculation_masses`` -> ``speculation_classes`` in the Amaranth
simulator, on pooled rows of a real head (``tiny``) and on random ones, with a plan row, gaps and stalls."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.hw.speculator import Speculator
from paro.sw import golden
from paro.sw.quant import quantize_head
from paro.sw.workloads import make_workload

SEED = 20261129
CONFIG = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=32, max_seq_len=512)


def tiny_head():
    workload = make_workload("tiny")
    head, _ = quantize_head(*workload.head(1), CONFIG.block_size)
    cq, ck, shift = head.score_multipliers(CONFIG)
    pooled_q = golden.pooled_codes(head.q8, CONFIG.block_size)
    pooled_k = golden.pooled_codes(head.k8, CONFIG.block_size)
    x = golden.round_shift((pooled_q @ pooled_k.T) * (cq[:, None] * ck[None, :]), shift)
    assert np.array_equal(x, golden.speculation_scores(head.q8, head.k8, cq, ck, shift, CONFIG.block_size))
    return pooled_q, pooled_k, cq, ck, shift, head.n_tokens


def golden_rows(pooled_q, pooled_k, cq, ck, shift, n_tokens, allowed, important, negligible):
    B, blocks = CONFIG.block_size, pooled_k.shape[0]
    x = golden.round_shift((pooled_q @ pooled_k.T) * (cq[:, None] * ck[None, :]), shift)
    keys = np.clip(n_tokens - np.arange(blocks) * B, 0, B)
    return golden.speculation_classes(golden.speculation_masses(x, keys, CONFIG, allowed), important, negligible)


def run(pooled_q, pooled_k, cq, ck, shift, n_tokens, allowed, important, negligible, rng, lanes=8, stall=0.0):
    dut = Speculator(CONFIG, lanes)
    blocks = pooled_k.shape[0]
    got = []

    async def testbench(ctx):
        ctx.set(dut.important, important)
        ctx.set(dut.negligible, negligible)
        for j in range(blocks):                      # the pooled K rows, then the rows with their plan bits
            ctx.set(dut.k_wr_en, 1)
            ctx.set(dut.k_wr_addr, j)
            ctx.set(dut.k_wr_data, {"k": pooled_k[j].tolist(), "ck": int(ck[j])})
            await ctx.tick()
        ctx.set(dut.k_wr_en, 0)
        for i in range(pooled_q.shape[0]):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"q": pooled_q[i].tolist(), "cq": int(cq[i]), "shift": int(shift),
                                    "n_blocks": blocks, "n_tokens": int(n_tokens),
                                    "allowed": sum(int(a) << j for j, a in enumerate(allowed[i]))})
            while not ctx.get(dut.i.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(dut.i.valid, 0)
            classes = []
            for _ in range(20 * (blocks + 4) ** 2):
                ready = rng.random() >= stall
                ctx.set(dut.o.ready, ready)
                if ready and ctx.get(dut.o.valid):
                    beat = ctx.get(dut.o.payload)
                    classes.append(int(beat.cls))
                    if beat.last:
                        await ctx.tick()
                        break
                await ctx.tick()
            got.append(classes)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return np.array(got)


def test_speculator_on_a_real_head():
    rng = np.random.default_rng(SEED)
    pooled_q, pooled_k, cq, ck, shift, n_tokens = tiny_head()
    allowed = np.ones((pooled_q.shape[0], pooled_k.shape[0]), dtype=bool)
    one = 1 << golden.SPEC_FRAC_BITS
    want = golden_rows(pooled_q, pooled_k, cq, ck, shift, n_tokens, allowed, round(0.5 * one), round(0.15 * one))
    assert len(set(want.ravel().tolist())) == 3, "the real head should have all three classes"
    got = run(pooled_q, pooled_k, cq, ck, shift, n_tokens, allowed, round(0.5 * one), round(0.15 * one), rng)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("lanes", [1, 32])
def test_speculator_random_rows_with_a_plan_and_stalls(lanes):
    rng = np.random.default_rng(SEED + lanes)
    blocks = 6
    pooled_q = rng.integers(-128, 128, (3, CONFIG.head_dim))
    pooled_k = rng.integers(-128, 128, (blocks, CONFIG.head_dim))
    cq = rng.integers(1, 1 << 15, 3)
    ck = rng.integers(1, 1 << 15, blocks)
    allowed = rng.random((3, blocks)) < 0.7
    allowed[:, 0] = True
    n_tokens = (blocks - 1) * CONFIG.block_size + 5
    one = 1 << golden.SPEC_FRAC_BITS
    want = golden_rows(pooled_q, pooled_k, cq, ck, 40, n_tokens, allowed, round(0.6 * one), round(0.1 * one))
    got = run(pooled_q, pooled_k, cq, ck, 40, n_tokens, allowed, round(0.6 * one), round(0.1 * one), rng,
              lanes=lanes, stall=0.4)
    assert np.array_equal(got, want)


def test_speculator_refuses_lanes_that_do_not_divide_head_dim():
    with pytest.raises(ParoError, match="speculator lanes"):
        Speculator(CONFIG, 5)
