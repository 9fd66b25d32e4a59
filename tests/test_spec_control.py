"""The engine's speculation control (``hw/spec_control.py``) against its golden twin ``golden.spec_control`` in
the Amaranth simulator: a fetcher model answers its K pool wants with a real head's K rows and brings each
query block's Q rows and bitmap row (the next one while the current one is speculated, as the fetcher's
prefetch does), with random gaps; the blocks it marks skipped per row must be exactly the golden model's, and
``row_ready`` must pass each row only after its last mark."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.hw.spec_control import SpecControl
from paro.sw import golden
from paro.sw.contract import engine_buffers
from paro.sw.quant import quantize_head
from paro.sw.workloads import make_workload

SEED = 20261129
CONFIG = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=32, max_seq_len=512, spec_lanes=4)


def run(head, bitmap, table, shift, important, negligible, rng, mode, gap=0.3):
    """Run one head through SpecControl (``SPEC`` = ``mode``); returns the blocks marked skipped and low-bit per
    row and, per row, whether ``row_ready`` passed it before its last mark (it must not)."""
    cfg, B = CONFIG, CONFIG.block_size
    dut = SpecControl(cfg)
    blocks = bitmap.shape[0]
    half_lines = engine_buffers(cfg)["bitmap_rows"]["entries"] // 2
    marks = [set() for _ in range(blocks)]
    lows = [set() for _ in range(blocks)]
    early = []

    async def testbench(ctx):
        for name, value in (("spec", mode), ("important", important), ("negligible", negligible),
                            ("n_blocks", blocks), ("n_tokens", head.n_tokens), ("score_shift", shift),
                            ("row_first", 0), ("row_end", blocks)):
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.q_tags, [cfg.max_blocks, cfg.max_blocks])
        tags = [cfg.max_blocks, cfg.max_blocks]
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)

        async def cycle():
            """One clock: the block table answers the addresses, the marks are recorded."""
            ctx.set(dut.cq_data, int(table["CQ"][min(ctx.get(dut.cq_addr), blocks - 1)]))
            ctx.set(dut.ck_data, int(table["CK"][min(ctx.get(dut.ck_addr), blocks - 1)]))
            if ctx.get(dut.mark_en):
                row = ctx.get(dut.row_ready)
                (lows if ctx.get(dut.mark_low) else marks)[pending_row[0]].add(ctx.get(dut.mark_j))
                assert ctx.get(dut.mark_half) == pending_row[0] % 2
                early.append(row > pending_row[0])
            await ctx.tick()

        async def rows(kind, address, data):
            for n, line in enumerate(data):
                while rng.random() < gap:
                    await cycle()
                ctx.set(kind, 1)
                ctx.set(dut.wr_addr, address + n)
                ctx.set(dut.wr_data, [int(v) for v in line])
                await cycle()
                ctx.set(kind, 0)

        pending_row = [0]
        for j in range(blocks):                         # the pool pass: one want at a time
            while not ctx.get(dut.pool.valid):
                await cycle()
            assert ctx.get(dut.pool.payload.block) == j
            await rows(dut.pool_we, 0, head.k8[j * B:(j + 1) * B])
            ctx.set(dut.pool.ready, 1)
            await cycle()
            ctx.set(dut.pool.ready, 0)
        assert not ctx.get(dut.pool.valid)

        async def fetch(r):
            bitmap_lines = np.zeros((half_lines, cfg.head_dim), dtype=np.int64)
            bitmap_lines.reshape(-1)[:blocks] = bitmap[r]
            await rows(dut.q_we, (r % 2) * B, head.q8[r * B:(r + 1) * B])
            await rows(dut.bitmap_we, (r % 2) * half_lines, bitmap_lines)
            tags[r % 2] = r
            ctx.set(dut.q_tags, tags)

        await fetch(0)
        for r in range(blocks):
            pending_row[0] = r
            if r + 1 < blocks:
                await fetch(r + 1)                      # the prefetch, while row r is speculated
            for _ in range(20 * (blocks + 4) ** 2):
                if ctx.get(dut.row_ready) > r:
                    break
                await cycle()
            assert ctx.get(dut.row_ready) == r + 1, f"row {r} was never speculated"
        for _ in range(3):
            await cycle()
        assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return marks, lows, early


@pytest.mark.parametrize("plan, mode", [(False, golden.SPEC_SKIP_ONLY), (True, golden.SPEC_LOW_BITS)],
                         ids=["dense-skips", "plan-skips-and-low-bits"])
def test_spec_control_marks_the_golden_skips(plan, mode):
    rng = np.random.default_rng(SEED + plan)
    workload = make_workload("tiny")
    head, _ = quantize_head(*workload.head(1), CONFIG.block_size)
    cq, ck, shift = head.score_multipliers(CONFIG)
    blocks = head.q8.shape[0] // CONFIG.block_size
    bitmap = np.full((blocks, blocks), 8, dtype=np.uint8)
    if plan:
        bitmap = np.where(rng.random((blocks, blocks)) < 0.7, rng.choice([4, 8], (blocks, blocks)), 0).astype(np.uint8)
        bitmap[np.arange(blocks), np.arange(blocks)] = 8
    one = 1 << golden.SPEC_FRAC_BITS
    important, negligible = round(0.7 * one), round(0.15 * one)
    want = golden.spec_control(head.q8, head.k8, cq, ck, shift, head.n_tokens, bitmap, important, negligible, CONFIG,
                               mode)
    x = golden.speculation_scores(head.q8, head.k8, cq, ck, shift, CONFIG.block_size)
    keys = np.clip(head.n_tokens - np.arange(blocks) * CONFIG.block_size, 0, CONFIG.block_size)
    classes = golden.speculation_classes(golden.speculation_masses(x, keys, CONFIG, bitmap), important, negligible)
    print(f"seed {SEED + plan}: {blocks} blocks, golden skips {int(((want == 0) & (bitmap != 0)).sum())} kept blocks, "
          f"lowers {int(((want < bitmap) & (want != 0)).sum())}")
    assert np.any((want == 0) & (bitmap != 0)), "the head should have blocks to skip"
    assert mode == golden.SPEC_SKIP_ONLY or np.any((want == 4) & (bitmap == 8)), "and blocks to lower"
    marks, lows, early = run(head, bitmap, {"CQ": cq, "CK": ck}, shift, important, negligible, rng, mode)
    for r in range(blocks):
        assert marks[r] == set(np.flatnonzero(want[r] == 0).tolist()), f"row {r}"
        low = classes[r] == golden.SPEC_LUT if mode == golden.SPEC_LOW_BITS else np.zeros(blocks, dtype=bool)
        assert lows[r] == set(np.flatnonzero(low).tolist()), f"row {r}"
    assert not any(early), "row_ready passed a row before its last mark"


def test_spec_control_needs_spec_lanes():
    with pytest.raises(ParoError, match="spec_lanes > 0"):
        SpecControl(AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=32, max_seq_len=512))
