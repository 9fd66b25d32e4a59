"""Amaranth-simulator unit tests of the attention engine's blocks, each against its golden twin in
``paro.sw.golden`` (same name as the block). Seeds are fixed and printed in failures."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from paro.config import AcceleratorConfig, PEMode
from paro.hw.accumulator import OutputAccumulator, accumulator_layout
from paro.hw.axi_lite import AxiLiteSlave
from paro.hw.controller import EngineController
from paro.hw.fetcher import Fetcher
from paro.hw.kv_cache import WANT_K, WANT_Q, WANT_V, BlockCache
from paro.hw.k_reduce import KReduction
from paro.hw.mem_reader import MemoryReader
from paro.hw.mem_writer import MemoryWriter
from paro.hw.operand_feed import OperandFeed
from paro.hw.output_stage import OutputStage
from paro.hw.p_lanes import PLanes
from paro.hw.registers import RegisterFile
from paro.hw.scheduler import BlockScheduler
from paro.hw.score_unit import LOWEST_SCORE, ScoreUnit
from paro.hw.segment_shift import SegmentShift
from paro.hw.tile_queue import TileQueue
from paro.sw import golden
from paro.sw.contract import BITMAP, COUNTERS, PROGRAM_REGISTERS, REGISTERS, RESP_OKAY, RESP_SLVERR, TABLES

SEED = 20261128
CONFIG = AcceleratorConfig(rows=4, cols=2, block_size=16, head_dim=16, max_seq_len=128, max_kept_keys=48,
                          axi_data_bits=64)
LANES = 2 * CONFIG.cols


def run(dut, testbench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def test_k_reduction_every_int8_value():
    dut = KReduction(CONFIG)
    values = np.arange(-128, 128).reshape(-1, LANES)

    async def testbench(ctx):
        for row in values:
            for n, value in enumerate(row):
                ctx.set(dut.k8[n], int(value))
            assert [ctx.get(dut.k4[n]) for n in range(LANES)] == golden.k_reduction(row).tolist(), row

    run(dut, testbench, clock=False)


@pytest.mark.parametrize("bits", [4, 8])
def test_p_lanes_numerators_and_levels(bits):
    rng = np.random.default_rng(SEED + bits)
    dut = PLanes(CONFIG)

    async def testbench(ctx):
        ctx.set(dut.four_bit, bits == 4)
        for _ in range(300):
            row_max = rng.integers(-(1 << 30), 1 << 30, LANES)
            x = row_max - rng.choice([0, 1, 255, 256, 4000, 1 << 20], LANES) - rng.integers(0, 300, LANES)
            z, valid = rng.integers(0, 16, LANES), bool(rng.random() < 0.8)
            for n in range(LANES):
                ctx.set(dut.x[n], int(x[n]))
                ctx.set(dut.row_max[n], int(row_max[n]))
                ctx.set(dut.z[n], int(z[n]))
            ctx.set(dut.key_valid, valid)
            e, p = golden.p_lanes(x, row_max, z, bits, valid, CONFIG)
            assert [ctx.get(dut.e[n]) for n in range(LANES)] == e.tolist(), f"seed {SEED}: x={x} m={row_max}"
            assert [ctx.get(dut.p[n]) for n in range(LANES)] == p.tolist(), f"seed {SEED}: e={e} z={z}"

    run(dut, testbench, clock=False)


def test_segment_shift_including_empty_segments():
    rng = np.random.default_rng(SEED)
    dut = SegmentShift(CONFIG)

    async def testbench(ctx):
        for _ in range(300):
            row_max = rng.integers(-(1 << 30), 1 << 30, LANES)
            seg_max = row_max - rng.choice([0, 3, 256, 1000, 3000, 6000], LANES)
            seg_max[rng.random(LANES) < 0.2] = LOWEST_SCORE           # a segment with no real key
            for n in range(LANES):
                ctx.set(dut.row_max[n], int(row_max[n]))
                ctx.set(dut.seg_max[n], int(seg_max[n]))
            want = golden.segment_shift(row_max, seg_max, CONFIG)
            assert [ctx.get(dut.z[n]) for n in range(LANES)] == want.tolist(), f"seed {SEED}: {row_max} {seg_max}"

    run(dut, testbench, clock=False)


def test_register_file_writes_reads_and_counters():
    rng = np.random.default_rng(SEED)
    dut = RegisterFile(CONFIG)
    nb = CONFIG.max_blocks
    writes = [(REGISTERS[name].address, int(rng.integers(0, 1 << 32))) for name in PROGRAM_REGISTERS]
    writes += [(table.base + e, int(rng.integers(0, 1 << 20))) for table in TABLES.values() for e in range(nb)]
    writes += [(BITMAP.base + int(e), int(rng.integers(0, 16))) for e in rng.choice(nb * nb, 10, replace=False)]
    writes += [(REGISTERS["N_BLOCKS"].address, 5)]                      # a later write wins
    registers, tables, bitmap = golden.register_file(writes, CONFIG)

    async def testbench(ctx):
        seen_bitmap = {}
        for address, value in writes:
            ctx.set(dut.bus.we, 1)
            ctx.set(dut.bus.addr, address)
            ctx.set(dut.bus.wdata, value)
            assert ctx.get(dut.start) == 0
            if ctx.get(dut.bitmap_we):
                seen_bitmap[ctx.get(dut.bitmap_addr)] = ctx.get(dut.bitmap_data)
            await ctx.tick()
        ctx.set(dut.bus.we, 0)
        assert {name: ctx.get(getattr(dut, name.lower())) for name in PROGRAM_REGISTERS} == registers
        assert seen_bitmap == bitmap
        for name in TABLES:
            for entry, value in tables[name].items():
                ctx.set(getattr(dut, f"{name.lower()}_addr"), entry)
                assert ctx.get(getattr(dut, f"{name.lower()}_data")) == value, (name, entry)
        ctx.set(dut.bus.addr, REGISTERS["START"].address)
        ctx.set(dut.bus.wdata, 1)
        ctx.set(dut.bus.we, 1)
        assert ctx.get(dut.start) == 1
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.bus.we, 0)
        ctx.set(dut.clear, 0)
        ctx.set(dut.busy, 1)
        pattern, reads, wbeats = rng.random((3, 50)) < 0.7
        for beat, read, write in zip(pattern, reads, wbeats):
            ctx.set(dut.beat, bool(beat))
            ctx.set(dut.read_beat, bool(read))
            ctx.set(dut.write_beat, bool(write))
            await ctx.tick()
        for name in ("busy", "beat", "read_beat", "write_beat"):
            ctx.set(getattr(dut, name), 0)
        for name, value in (("kept8", 7), ("kept4", 9), ("skipped", 11), ("done", 1)):
            ctx.set(getattr(dut, name), value)
        beat_bytes = CONFIG.axi_data_bits // 8
        expected = {"CYCLES": 50, "ARRAY_BEATS": int(pattern.sum()), "STALL_CYCLES": 50 - int(pattern.sum()),
                    "KEPT8": 7, "KEPT4": 9, "SKIPPED": 11, "BYTES_READ": beat_bytes * int(reads.sum()),
                    "BYTES_WRITTEN": beat_bytes * int(wbeats.sum())}
        for name in COUNTERS:
            ctx.set(dut.bus.addr, REGISTERS[name].address)
            assert ctx.get(dut.bus.rdata) == expected[name], name
        ctx.set(dut.bus.addr, REGISTERS["STATUS"].address)
        assert ctx.get(dut.bus.rdata) == 0b10

    run(dut, testbench)


def _tile(**fields):
    """A tile descriptor as a dict for ``ctx.set`` (fields not given are 0)."""
    full = {"pass_b": 0, "query_group": 0, "key_group": 0, "dim_group": 0, "kept_index": 0, "key_block": 0,
            "four_bit": 0, "ck": 0, "cv": 0, "z": [0] * LANES}
    full.update(fields)
    return full


def test_score_unit_scales_stores_and_keeps_row_maxima():
    rng = np.random.default_rng(SEED)
    B, R = CONFIG.block_size, CONFIG.rows
    kept, n_tokens, shift = [(0, 8), (2, 4)], 2 * B + 5, 14          # block 2 is partly padding
    s = rng.integers(-(1 << 14), 1 << 14, (B, len(kept) * B))
    cq, ck = int(rng.integers(1, 1 << 15)), rng.integers(1, 1 << 15, 3)
    cols = np.concatenate([np.arange(j * B, (j + 1) * B) for j, _ in kept])
    four = np.repeat([b == 4 for _, b in kept], B)
    x, row_max = golden.score_unit(s, cq, np.repeat([ck[j] for j, _ in kept], B), four, shift, cols < n_tokens)
    dut = ScoreUnit(CONFIG)

    async def testbench(ctx):
        ctx.set(dut.cq, cq)
        ctx.set(dut.score_shift, shift)
        ctx.set(dut.n_tokens, n_tokens)
        ctx.set(dut.reset, 1)
        await ctx.tick()
        ctx.set(dut.reset, 0)
        written = {}
        for index, (j, bits) in enumerate(kept):
            width = CONFIG.cols * (2 if bits == 4 else 1)
            factor = int(ck[j]) << (4 if bits == 4 else 0)
            for key_group in range(B // width):
                for query_group in range(B // R):
                    ctx.set(dut.tile, _tile(query_group=query_group, key_group=key_group, kept_index=index,
                                            key_block=j, four_bit=bits == 4, ck=factor))
                    for beat in range(width):
                        key = key_group * width + beat
                        ctx.set(dut.valid, 1)
                        ctx.set(dut.beat, beat)
                        for r in range(R):
                            ctx.set(dut.column[r], int(s[query_group * R + r, index * B + key]))
                        assert ctx.get(dut.wr_en) == 1
                        for r in range(R):
                            written[ctx.get(dut.wr_addr[r])] = ctx.get(dut.wr_data[r])
                        await ctx.tick()
                        ctx.set(dut.valid, 0)
                        if rng.random() < 0.3:
                            await ctx.tick()                       # gaps between drained beats
        expected = {q * CONFIG.max_kept_keys + c: int(x[q, c]) for q in range(B) for c in range(len(kept) * B)}
        assert written == expected
        assert [ctx.get(dut.row_max[q]) for q in range(B)] == row_max.tolist()

    run(dut, testbench)


def test_tile_queue_pairs_every_beat_with_its_tile():
    rng = np.random.default_rng(SEED)
    dut = TileQueue(CONFIG)
    tiles = [_tile(pass_b=int(rng.integers(2)), query_group=n, four_bit=int(rng.integers(2)),
                   z=rng.integers(0, 16, LANES).tolist()) for n in range(12)]
    beats = [CONFIG.cols * (2 if t["four_bit"] else 1) for t in tiles]
    expected = [(t["query_group"], t["pass_b"], t["z"], beat) for t, beat in golden.tile_queue(tiles, beats)]

    async def testbench(ctx):
        got, pushed, drained_tiles, beat = [], 0, 0, 0
        for _ in range(2000):
            push = pushed < len(tiles) and ctx.get(dut.room) and rng.random() < 0.5
            ctx.set(dut.push_en, push)
            if push:
                ctx.set(dut.push, tiles[pushed])
            drain = drained_tiles < pushed and rng.random() < 0.7
            ctx.set(dut.c.valid, drain)
            ctx.set(dut.c.payload.last, drain and beat == beats[drained_tiles] - 1)
            if drain:
                assert ctx.get(dut.qk_valid) + ctx.get(dut.pv_valid) == 1
                tile = ctx.get(dut.tile)
                got.append((tile.query_group, tile.pass_b, [tile.z[n] for n in range(LANES)], ctx.get(dut.beat)))
                beat += 1
                if beat == beats[drained_tiles]:
                    beat, drained_tiles = 0, drained_tiles + 1
            await ctx.tick()
            pushed += push
            if drained_tiles == len(tiles):
                break
        assert got == expected
        assert ctx.get(dut.empty) == 1

    run(dut, testbench)


def test_output_accumulator_read_modify_write():
    rng = np.random.default_rng(SEED)
    B, R, groups = CONFIG.block_size, CONFIG.rows, CONFIG.head_dim // CONFIG.rows
    blocks = [(8, int(rng.integers(1, 1 << 15))), (4, int(rng.integers(1, 1 << 15)))]
    u = rng.integers(-(1 << 12), 1 << 12, (len(blocks), B, CONFIG.head_dim))
    z = rng.integers(0, 16, (len(blocks), B))
    acc = np.zeros((B, CONFIG.head_dim), dtype=np.int64)
    for index, (_, cv) in enumerate(blocks):
        acc = golden.output_accumulator(acc, u[index], cv, z[index], first=index == 0)
    dut = OutputAccumulator(CONFIG)

    async def testbench(ctx):
        for index, (bits, cv) in enumerate(blocks):
            width = CONFIG.cols * (2 if bits == 4 else 1)
            for query_group in range(B // width):
                lanes_z = z[index, query_group * width:(query_group + 1) * width].tolist()
                for dim_group in range(groups):
                    ctx.set(dut.tile, _tile(pass_b=1, query_group=query_group, dim_group=dim_group,
                                            kept_index=index, four_bit=bits == 4, cv=cv,
                                            z=lanes_z + [0] * (LANES - width)))
                    for beat in range(width):
                        query = query_group * width + beat
                        ctx.set(dut.valid, 1)
                        ctx.set(dut.beat, beat)
                        for r in range(R):
                            ctx.set(dut.column[r], int(u[index, query, dim_group * R + r]))
                        await ctx.tick()
                        ctx.set(dut.valid, 0)
                        assert ctx.get(dut.pending) == 1
        await ctx.tick()
        await ctx.tick()
        assert ctx.get(dut.pending) == 0
        ctx.set(dut.rd_en, 1)
        for query in range(B):
            for group in range(groups):
                ctx.set(dut.rd_addr, query * groups + group)
                await ctx.tick()
                word = ctx.get(dut.rd_data)
                assert [word[r] for r in range(R)] == acc[query, group * R:(group + 1) * R].tolist(), (query, group)

    run(dut, testbench)


def test_output_stage_codes_with_back_pressure():
    rng = np.random.default_rng(SEED)
    B, R, d = CONFIG.block_size, CONFIG.rows, CONFIG.head_dim
    groups = d // R
    acc = rng.integers(-(1 << 30), 1 << 30, (B, d))
    row_sum = rng.integers(1 << CONFIG.exp_bits, 1 << (CONFIG.exp_bits + 3), B)
    final_shift = 40
    codes = golden.output_stage(acc, row_sum, final_shift, CONFIG)
    m = Module()
    m.submodules.stage = stage = OutputStage(CONFIG)
    m.submodules.memory = memory = Memory(shape=accumulator_layout(CONFIG), depth=B * groups,
                                          init=[acc[q, g * R:(g + 1) * R].tolist() for q in range(B) for g in range(groups)])
    port = memory.read_port()
    m.d.comb += [port.addr.eq(stage.rd_addr), port.en.eq(stage.rd_en), stage.rd_data.eq(port.data)]

    async def testbench(ctx):
        assert ctx.get(stage.idle) == 1
        for q in range(B):
            ctx.set(stage.row_sum[q], int(row_sum[q]))
        ctx.set(stage.final_shift, final_shift)
        ctx.set(stage.last_block, 1)
        ctx.set(stage.start, 1)
        await ctx.tick()
        ctx.set(stage.start, 0)
        got = []
        for _ in range(20 * B * groups):
            ready = rng.random() < 0.6
            ctx.set(stage.o.ready, ready)
            if ready and ctx.get(stage.o.valid):
                beat = ctx.get(stage.o.payload)
                got.append(([beat.o[r] for r in range(R)], beat.last))
            await ctx.tick()
            if ctx.get(stage.idle):
                break
        expected = [(codes[q, g * R:(g + 1) * R].tolist(), int(q == B - 1 and g == groups - 1))
                    for q in range(B) for g in range(groups)]
        assert got == expected

    run(m, testbench)


@pytest.mark.parametrize("first", [0, 1])
def test_engine_controller_issues_the_golden_tile_order(first):
    """The controller with a real block scheduler and an always-ready datapath issues exactly the tiles of
    :func:`golden.engine_controller` for the query blocks from ``first`` on, in order, then raises ``done``."""
    rng = np.random.default_rng(SEED)
    nb = 3
    bitmap = rng.choice([0, 4, 8], (nb, nb))
    bitmap[np.arange(nb), rng.integers(0, nb, nb)] = 8               # every query row keeps a block
    expected = [t for t in golden.engine_controller(bitmap, CONFIG) if t["query_block"] >= first]
    m = Module()
    m.submodules.ctrl = ctrl = EngineController(CONFIG)
    m.submodules.sched = sched = BlockScheduler(CONFIG)
    wiring.connect(m, sched.o, ctrl.kept)
    m.d.comb += [sched.start.eq(ctrl.sched_start), sched.row.eq(ctrl.sched_row), sched.count.eq(ctrl.sched_count),
                 sched.clear.eq(ctrl.clear), sched.n_blocks.eq(nb), ctrl.row_first.eq(first), ctrl.row_end.eq(nb),
                 ctrl.n_tokens.eq(nb * CONFIG.block_size), ctrl.advance.eq(1), ctrl.tile_room.eq(1),
                 ctrl.tiles_empty.eq(1), ctrl.out_idle.eq(1), ctrl.want.ready.eq(1)]

    async def testbench(ctx):
        for i in range(nb):
            for j in range(nb):
                ctx.set(sched.wr_en, 1)
                ctx.set(sched.wr_addr, i * CONFIG.max_blocks + j)
                ctx.set(sched.wr_data, int(bitmap[i, j]))
                await ctx.tick()
        ctx.set(sched.wr_en, 0)
        ctx.set(ctrl.start, 1)
        await ctx.tick()
        ctx.set(ctrl.start, 0)
        got = []
        for _ in range(200_000):
            if ctx.get(ctrl.tile_push):
                tile = ctx.get(ctrl.tile)
                entry = {"pass_b": tile.pass_b, "query_block": ctx.get(ctrl.sched_row), "key_block": tile.key_block,
                         "kept_index": tile.kept_index, "four_bit": tile.four_bit, "query_group": tile.query_group}
                entry["dim_group" if tile.pass_b else "key_group"] = tile.dim_group if tile.pass_b else tile.key_group
                got.append(entry)
            await ctx.tick()
            if ctx.get(ctrl.done):
                break
        assert got == expected
        assert ctx.get(ctrl.done) == 1 and ctx.get(ctrl.busy) == 0
        computed = bitmap[first:]
        assert ctx.get(sched.kept8) == (computed == 8).sum() and ctx.get(sched.skipped) == (computed == 0).sum()

    run(m, testbench)


def _capture(ctx, feed, four_bit, pass_b):
    """The array operands of the beat the feed offers: (A column, B column values)."""
    a = [ctx.get(feed.a.payload.a[r]) for r in range(CONFIG.rows)]
    words = [ctx.get(feed.b.payload.b[c].int8) & 0xFF for c in range(CONFIG.cols)]
    mode = (PEMode.UINT4 if pass_b else PEMode.INT4) if four_bit else PEMode.INT8
    assert ctx.get(feed.a.payload.mode) == mode
    return a, golden.unpack_operand_b(np.array(words), mode).tolist()


@pytest.mark.parametrize("pass_b,four_bit", [(0, 1), (0, 0), (1, 0), (1, 1)],
                         ids=["qk-int4", "qk-int8", "pv-int8", "pv-uint4"])
def test_operand_feed_builds_the_golden_tile_operands(pass_b, four_bit):
    rng = np.random.default_rng(SEED + 2 * pass_b + four_bit)
    B, R, d = CONFIG.block_size, CONFIG.rows, CONFIG.head_dim
    width = CONFIG.cols * (2 if four_bit else 1)
    q8, k8, v8 = (rng.integers(-128, 128, (B, d)) for _ in range(3))
    tile = {"pass_b": pass_b, "query_block": 0, "key_block": 0, "four_bit": four_bit, "query_group": 1,
            "key_group": 1, "dim_group": 0}
    # PV: scores of the tile's queries (lanes) against the block's keys, their row maxima, segment shifts.
    x = rng.integers(-5000, 0, (width, B))
    row_max = np.zeros(B, dtype=np.int64)
    z = rng.integers(0, 4, width)
    n_tokens = B - 3                                                 # the last 3 keys are padding
    e, p = golden.p_lanes(x.T, 0, z, 8 if not four_bit else 4, True, CONFIG)
    e, p = np.where(np.arange(B)[:, None] < n_tokens, e, 0).T, np.where(np.arange(B)[:, None] < n_tokens, p, 0).T
    p_block = np.zeros((B, B), dtype=np.int64)
    p_block[width:2 * width] = p
    a_want, b_want, _ = golden.operand_feed(tile, q8, k8, v8, p_block, CONFIG)
    depth = B if pass_b else d
    dut = OperandFeed(CONFIG)

    async def testbench(ctx):
        ctx.set(dut.reset_sums, 1)
        await ctx.tick()
        ctx.set(dut.reset_sums, 0)
        for r in range(R):
            ctx.set(dut.q_rows[r], q8[R + r].tolist())
        for n in range(LANES):
            ctx.set(dut.k_rows[n], k8[width + n].tolist() if n < width else [0] * d)
            ctx.set(dut.z[n], int(z[n]) if n < width else 0)
        for q in range(B):
            ctx.set(dut.row_max[q], int(row_max[q]))
        ctx.set(dut.a.ready, 1)
        ctx.set(dut.b.ready, 1)
        columns = []
        for k in range(depth + 1):
            ctx.set(dut.fire, k < depth)
            if k < depth:
                ctx.set(dut.cmd, {"pass_b": pass_b, "step": k, "dim_group": 0, "query_group": 1, "four_bit": four_bit,
                                  "last": k == depth - 1, "key_valid": k < n_tokens, "first_dim_group": 1})
            if k > 0:                                                # the stage holds beat k - 1: its read data
                ctx.set(dut.v_row, v8[k - 1].tolist())
                for n in range(width):
                    ctx.set(dut.scores[n], int(x[n, k - 1]))
                assert ctx.get(dut.a.valid) == 1 and ctx.get(dut.beat) == 1
                columns.append(_capture(ctx, dut, four_bit, pass_b))
            assert ctx.get(dut.advance) == 1
            await ctx.tick()
        a_got = np.array([c[0] for c in columns]).T
        b_got = np.array([c[1] for c in columns]).T[:width]
        assert np.array_equal(a_got, a_want) and np.array_equal(b_got, b_want)
        if pass_b:
            sums = [ctx.get(dut.row_sum[q]) for q in range(B)]
            assert sums[width:2 * width] == e.sum(axis=1).tolist() and sum(sums) == e.sum()

    run(dut, testbench)


def test_axi_lite_slave_bridges_transactions_like_its_twin():
    """Random writes and reads, some misaligned or partial (SLVERR), with random gaps on every channel: the
    register-bus accesses and responses are those of :func:`golden.axi_lite_slave`."""
    rng = np.random.default_rng(SEED)
    transactions = []
    for _ in range(60):
        address = int(rng.integers(0, 1 << 12)) * 4 + int(rng.choice([0, 0, 0, 1, 2]))
        if rng.random() < 0.5:
            transactions.append(("w", address, int(rng.integers(0, 1 << 32)), int(rng.choice([0xF, 0xF, 0xF, 0x3]))))
        else:
            transactions.append(("r", address))
    expected = golden.axi_lite_slave(transactions)
    assert {e["resp"] for e in expected} == {RESP_OKAY, RESP_SLVERR}
    m = Module()
    m.submodules.dut = dut = AxiLiteSlave()
    m.d.comb += dut.csr.rdata.eq(dut.csr.addr * 3 + 1)            # a register bus that reads addr * 3 + 1
    bus = dut.axil

    async def idle(ctx, chance=0.4):
        while rng.random() < chance:
            await ctx.tick()

    async def testbench(ctx):
        seen = []
        for kind, address, *rest in transactions:
            await idle(ctx)
            access = None
            if kind == "w":
                ctx.set(bus.awaddr, address)
                ctx.set(bus.wdata, rest[0])
                ctx.set(bus.wstrb, rest[1])
                ctx.set(bus.awvalid, 1)
                await idle(ctx)                                     # W may follow AW by some cycles
                ctx.set(bus.wvalid, 1)
                while not ctx.get(bus.awready):
                    assert not ctx.get(dut.csr.we)
                    await ctx.tick()
                assert ctx.get(bus.wready)
                if ctx.get(dut.csr.we):
                    access = ("w", ctx.get(dut.csr.addr), ctx.get(dut.csr.wdata))
                await ctx.tick()
                ctx.set(bus.awvalid, 0)
                ctx.set(bus.wvalid, 0)
                await idle(ctx)                                     # B back-pressure
                ctx.set(bus.bready, 1)
                while not ctx.get(bus.bvalid):
                    await ctx.tick()
                resp = ctx.get(bus.bresp)
            else:
                ctx.set(bus.araddr, address)
                ctx.set(bus.arvalid, 1)
                while not ctx.get(bus.arready):
                    await ctx.tick()
                await ctx.tick()
                ctx.set(bus.arvalid, 0)
                await idle(ctx)                                     # R back-pressure
                ctx.set(bus.rready, 1)
                while not ctx.get(bus.rvalid):
                    await ctx.tick()
                resp = ctx.get(bus.rresp)
                if resp == RESP_OKAY:
                    access = ("r", (ctx.get(bus.rdata) - 1) // 3)
                else:
                    assert ctx.get(bus.rdata) == 0
            await ctx.tick()
            ctx.set(bus.bready, 0)
            ctx.set(bus.rready, 0)
            assert not ctx.get(bus.bvalid) and not ctx.get(bus.rvalid)
            seen.append({"resp": resp, "csr": access})
        assert seen == expected

    run(m, testbench)


def test_axi_lite_slave_takes_a_write_and_a_read_every_cycle():
    """With every valid and ready held high, one write and one read complete per cycle (no bubbles)."""
    m = Module()
    m.submodules.dut = dut = AxiLiteSlave()
    m.d.comb += dut.csr.rdata.eq(dut.csr.addr * 3 + 1)
    bus = dut.axil

    async def testbench(ctx):
        for name in ("awvalid", "wvalid", "bready", "rready"):
            ctx.set(getattr(bus, name), 1)
        ctx.set(bus.wstrb, 0xF)
        writes = 0
        for n in range(8):
            ctx.set(bus.awaddr, 4 * n)
            writes += ctx.get(bus.awready) and ctx.get(dut.csr.we)
            await ctx.tick()
        assert writes == 8 and ctx.get(bus.bvalid)
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.arvalid, 1)
        reads = []
        for n in range(8):
            ctx.set(bus.araddr, 4 * n)
            assert ctx.get(bus.arready)
            await ctx.tick()
            reads.append(ctx.get(bus.rdata))
        assert reads == [3 * n + 1 for n in range(8)]

    run(m, testbench)


#: A config whose Q/K/V blocks (4 KiB) take two 2 KiB bursts of a 64-bit bus: burst splitting is exercised.
MEMORY_CONFIG = AcceleratorConfig(rows=4, cols=4, block_size=64, head_dim=64, max_seq_len=256, axi_data_bits=64)


def axi_ram_process(axi, memory, rng, bursts, writes=None):
    """A simulated AXI4 slave on ``axi`` (the reader's or writer's master port): random ready and valid gaps
    on every channel; records the bursts it is given; serves reads from ``memory`` (a bytearray) and, with
    ``writes``, stores W beats into it."""
    beat = len(axi.rdata if hasattr(axi, "rdata") else axi.wdata) // 8

    async def process(ctx):
        queue, responses = [], 0
        names = ("arvalid", "arready", "araddr", "arlen", "rvalid", "rready") if writes is None else \
                ("awvalid", "awready", "awaddr", "awlen", "wvalid", "wready", "wdata", "wlast")
        async for _, _, *values in ctx.tick().sample(*(getattr(axi, n) for n in names)):
            sampled = dict(zip(names, values))
            if writes is None:
                if sampled["arvalid"] and sampled["arready"]:
                    bursts.append((sampled["araddr"], sampled["arlen"] + 1))
                    queue += [sampled["araddr"] + n * beat for n in range(sampled["arlen"] + 1)]
                if sampled["rvalid"] and sampled["rready"]:
                    queue.pop(0)
                ctx.set(axi.arready, rng.random() < 0.7)
                serve = bool(queue) and rng.random() < 0.7
                ctx.set(axi.rvalid, serve)
                if serve:
                    ctx.set(axi.rdata, int.from_bytes(memory[queue[0]:queue[0] + beat], "little"))
            else:
                if sampled["awvalid"] and sampled["awready"]:
                    bursts.append((sampled["awaddr"], sampled["awlen"] + 1))
                    queue += [sampled["awaddr"] + n * beat for n in range(sampled["awlen"] + 1)]
                if sampled["wvalid"] and sampled["wready"]:
                    address = queue.pop(0)
                    memory[address:address + beat] = sampled["wdata"].to_bytes(beat, "little")
                    writes.append(sampled["wlast"])
                    responses += sampled["wlast"]
                ctx.set(axi.awready, rng.random() < 0.7)
                ctx.set(axi.wready, rng.random() < 0.7)
                answer = responses > 0 and rng.random() < 0.7
                ctx.set(axi.bvalid, answer)
                responses -= answer
    return process


def test_memory_reader_reads_rows_in_bursts_like_its_twin():
    rng = np.random.default_rng(SEED)
    cfg, B, d = MEMORY_CONFIG, MEMORY_CONFIG.block_size, MEMORY_CONFIG.head_dim
    memory = bytearray(rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes())
    requests = [(0x1000, B), (0x4000 + 2 * B * d, B), (0x8000, 3), (0x9000 + 5 * d, 1)]
    bursts_expected, rows_expected = golden.memory_reader(requests, memory, cfg)
    assert [beats for _, beats in bursts_expected][:2] == [256, 256]
    dut, bursts = MemoryReader(cfg), []

    async def testbench(ctx):
        rows = []
        for address, count in requests:
            ctx.set(dut.req.payload, {"addr": address, "rows": count})
            ctx.set(dut.req.valid, 1)
            while not ctx.get(dut.req.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(dut.req.valid, 0)
            while len(rows) < sum(c for _, c in requests[:requests.index((address, count)) + 1]):
                ready = rng.random() < 0.6
                ctx.set(dut.row.ready, ready)
                if ready and ctx.get(dut.row.valid):
                    rows.append([int(x) for x in ctx.get(dut.row.payload)])
                await ctx.tick()
            ctx.set(dut.row.ready, 0)
        assert bursts == bursts_expected
        assert rows == [r.tolist() for r in rows_expected]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(axi_ram_process(dut.axi, memory, rng, bursts))
    sim.add_testbench(testbench)
    sim.run()


def test_memory_writer_writes_codes_in_bursts_like_its_twin():
    rng = np.random.default_rng(SEED)
    cfg, B, d, R = MEMORY_CONFIG, MEMORY_CONFIG.block_size, MEMORY_CONFIG.head_dim, MEMORY_CONFIG.rows
    codes = rng.integers(-(1 << 15), 1 << 15, (2 * B, d))
    registers = {"O_ADDR": 0x3000}
    bursts_expected, image = golden.memory_writer(codes, registers, cfg)
    memory, bursts, lasts = bytearray(1 << 16), [], []
    dut = MemoryWriter(cfg)

    async def testbench(ctx):
        assert ctx.get(dut.idle)
        for block in range(2):
            ctx.set(dut.addr, registers["O_ADDR"] + block * B * d * 2)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            beats = [codes[block * B + q, g * R:(g + 1) * R] for q in range(B) for g in range(d // R)]
            for beat in beats:
                ctx.set(dut.o.payload, {"o": [int(x) for x in beat], "last": 0})
                ctx.set(dut.o.valid, 1)
                while not ctx.get(dut.o.ready):
                    await ctx.tick()
                await ctx.tick()
                ctx.set(dut.o.valid, 0)
                while rng.random() < 0.3:
                    await ctx.tick()
            while not ctx.get(dut.idle):
                await ctx.tick()
        assert bursts == bursts_expected
        assert bytes(memory[0x3000:0x3000 + len(image)]) == image
        assert sum(lasts) == len(bursts_expected)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(axi_ram_process(dut.axi, memory, rng, bursts, writes=lasts))
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("slots", [None, 2])
def test_fetcher_requests_only_what_is_not_on_chip(slots):
    """The controller's wants of a head (Q per row, K and V of each kept block per pass) are served with
    exactly the golden fetcher's requests (prefetches included), every row lands in its buffer at a block
    boundary, and ``want`` is answered only once the rows are on chip; with 2 cache slots blocks are evicted
    and fetched again."""
    rng = np.random.default_rng(SEED)
    cfg = AcceleratorConfig(**{**CONFIG.to_dict(), "kv_cache_blocks": slots})
    B, nb = cfg.block_size, 4
    bitmap = rng.choice([0, 4, 8], (nb, nb))
    bitmap[np.arange(nb), np.arange(nb)] = 8
    registers = {"Q_ADDR": 0x1000, "K_ADDR": 0x4000, "V_ADDR": 0x8000}
    expected = golden.fetcher(bitmap, registers, cfg)
    wants = []
    for i, row in enumerate(bitmap):
        wants.append((WANT_Q, i))
        wants += [(WANT_K, int(j)) for j in np.flatnonzero(row)] + [(WANT_V, int(j)) for j in np.flatnonzero(row)]
    dut = Fetcher(cfg)

    def decode(address):
        """(kind, block) of a request address."""
        for kind, name in ((WANT_V, "V_ADDR"), (WANT_K, "K_ADDR"), (WANT_Q, "Q_ADDR")):
            if address >= registers[name]:
                return kind, (address - registers[name]) // (B * cfg.head_dim)

    async def testbench(ctx):
        for name in ("q", "k", "v"):
            ctx.set(getattr(dut, f"{name}_addr"), registers[f"{name.upper()}_ADDR"])
        ctx.set(dut.row_end, nb)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        requests, landed = [], {}

        async def serve_request():
            address = ctx.get(dut.req.payload.addr)
            requests.append((address, ctx.get(dut.req.payload.rows)))
            kind, block = decode(address)
            ctx.set(dut.req.ready, 1)
            await ctx.tick()
            ctx.set(dut.req.ready, 0)
            first = None
            for n in range(B):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.row.payload, [n - 8] * cfg.head_dim)
                ctx.set(dut.row.valid, 1)
                assert ctx.get(dut.row.ready)
                enables = [ctx.get(getattr(dut, f"{t}_we")) for t in "qkv"]
                assert enables == [kind == WANT_Q, kind == WANT_K, kind == WANT_V]
                first = ctx.get(dut.wr_addr) if first is None else first
                assert ctx.get(dut.wr_addr) == first + n and first % B == 0
                await ctx.tick()
                ctx.set(dut.row.valid, 0)
            landed[kind, block] = first // B

        for kind, block in wants:
            ctx.set(dut.want.payload, {"kind": kind, "block": block})
            ctx.set(dut.want.valid, 1)
            while not ctx.get(dut.want.ready):
                if ctx.get(dut.req.valid):
                    await serve_request()
                else:
                    await ctx.tick()
            if kind == WANT_Q:
                assert landed[kind, block] == block % 2
            else:
                assert landed[kind, block] == ctx.get(dut.slot)      # the rows are in the slot it names
            await ctx.tick()
            ctx.set(dut.want.valid, 0)
            for _ in range(int(rng.integers(0, 3))):               # the array computes; prefetches run
                if ctx.get(dut.req.valid):
                    await serve_request()
                await ctx.tick()
        assert sorted(requests) == sorted(expected) and len(requests) == len(expected)
        if slots == 2:
            assert len(expected) > nb + 2 * len(np.flatnonzero(bitmap.any(axis=0)))   # something was refetched

    run(dut, testbench)


def test_block_cache_places_and_evicts_like_its_twin():
    """A K/V want sequence with reuse and more blocks than slots: every want's slot and fetches (K brings
    its V) are those of :func:`golden.kv_cache` (lowest free slot, else least recently wanted)."""
    rng = np.random.default_rng(SEED)
    cfg = AcceleratorConfig(**{**CONFIG.to_dict(), "kv_cache_blocks": 3})
    wants = [("K" if rng.random() < 0.6 else "V", int(rng.integers(0, 6))) for _ in range(40)]
    expected = golden.kv_cache(wants, cfg)
    assert any(fetched for _, fetched in expected[10:]) and any(not fetched for _, fetched in expected)
    dut = BlockCache(cfg)

    async def testbench(ctx):
        got = []
        for kind_name, block in wants:
            kind = WANT_K if kind_name == "K" else WANT_V
            ctx.set(dut.block, block)
            ctx.set(dut.kind, kind)
            fetched = []
            if not ctx.get(dut.hit):
                if not ctx.get(dut.present):
                    ctx.set(dut.evict, 1)
                    await ctx.tick()
                    ctx.set(dut.evict, 0)
                    while not ctx.get(dut.victim_valid):
                        await ctx.tick()
                    slot = ctx.get(dut.victim)
                    ctx.set(dut.install, 1)
                    await ctx.tick()
                    ctx.set(dut.install, 0)
                slot = ctx.get(dut.slot) if ctx.get(dut.present) else slot
                kinds = [kind] + ([WANT_V] if kind == WANT_K and not (ctx.get(dut.v_valid) >> slot) & 1 else [])
                for k in kinds:
                    ctx.set(dut.fill, 1)
                    ctx.set(dut.fill_slot, slot)
                    ctx.set(dut.fill_kind, k)
                    await ctx.tick()
                    ctx.set(dut.fill, 0)
                fetched = ["K" if k == WANT_K else "V" for k in kinds]
            assert ctx.get(dut.hit)
            got.append((ctx.get(dut.slot), fetched))
            ctx.set(dut.touch, 1)
            ctx.set(dut.touch_slot, ctx.get(dut.slot))
            await ctx.tick()
            ctx.set(dut.touch, 0)
        assert got == expected

    run(dut, testbench)
