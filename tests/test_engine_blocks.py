"""Amaranth-simulator unit tests of the attention engine's blocks, each against its golden twin in
``paro.sw.golden`` (same name as the block). Seeds are fixed and printed in failures."""

import dataclasses

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from paro.config import PACKING, SCORE_LIMIT, AcceleratorConfig, PEMode
from paro.hw.accumulator import OutputAccumulator, accumulator_layout
from paro.hw.axi_lite import AxiLiteSlave
from paro.hw.block_table import BlockTable
from paro.hw.controller import EngineController
from paro.hw.descriptor import CHECK_LATENCY, DescriptorUnit
from paro.hw.fetcher import Fetcher
from paro.hw.kv_cache import WANT_DESC, WANT_K, WANT_Q, WANT_TABLE, WANT_V, BlockCache
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
from paro.sw.cycles import SHIFT_STAGES
from paro.hw.sequencer import LayerSequencer
from paro.hw.tile_queue import TileQueue
from paro.sw import golden
from paro.sw.contract import (CONTROL_REGISTERS, COUNTER_STRIDE, DESCRIPTOR, REGISTERS, RESP_OKAY, RESP_SLVERR,
                              TABLE_FIELDS, bitmap_stride, descriptor_fields, descriptor_lines, descriptor_stride,
                              descriptor_words, engine_buffers, head_counter_address, layer_memory_map, list_problem,
                              row_buffer_geometry, table_bytes)

SEED = 20261128
CONFIG = AcceleratorConfig(rows=4, cols=2, block_size=16, head_dim=16, max_seq_len=128, max_kept_keys=48,
                          axi_data_bits=64)
LANES = CONFIG.engine_lanes
#: The same build with 2-bit blocks: four crumbs a PE word, 4C lanes.
CONFIG2 = dataclasses.replace(CONFIG, bitwidths=(0, 2, 4, 8))
#: (config, bits) of every computed bitwidth, each in a build that has it.
EVERY_BITS = [(CONFIG, 8), (CONFIG, 4), (CONFIG2, 2)]


def run(dut, testbench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("bitwidths, k4_cut, k2_cut", [((0, 2, 4, 8), "round", "block"),
                                                    ((0, 4, 8), "leading-zero", "block"),
                                                    ((0, 2, 4, 8), "leading-zero", "block"),
                                                    ((0, 2, 4, 8), "round", "leading-zero"),
                                                    ((0, 2, 4, 8), "leading-zero", "leading-zero")])
def test_k_reduction_every_int8_value(bitwidths, k4_cut, k2_cut):
    """Every INT8 value's 4-bit and 2-bit lanes are the golden cuts' (a lane cut at the leading zero: its
    mantissa and its exponent)."""
    config = dataclasses.replace(CONFIG2, bitwidths=bitwidths, k4_cut=k4_cut, k2_cut=k2_cut)
    dut = KReduction(config)
    lanes = config.engine_lanes
    values = np.arange(-128, 128).reshape(-1, lanes)

    async def testbench(ctx):
        for row in values:
            for n, value in enumerate(row):
                ctx.set(dut.k8[n], int(value))
            for bits in config.computed_bitwidths[:-1]:
                lanes_out = [ctx.get(getattr(dut, f"k{bits}")[n]) for n in range(lanes)]
                expected = golden.k_reduction(row, bits, config.k_cuts)
                if config.k_cuts[bits] == "leading-zero":
                    mantissa, exponent = expected
                    assert lanes_out == mantissa.tolist(), (bits, row)
                    assert [ctx.get(getattr(dut, f"e{bits}")[n]) for n in range(lanes)] == exponent.tolist(), row
                else:
                    assert lanes_out == expected.tolist(), (bits, row)

    run(dut, testbench, clock=False)


@pytest.mark.parametrize("config,bits", EVERY_BITS, ids=["8", "4", "2"])
def test_p_lanes_numerators_and_levels(config, bits):
    rng = np.random.default_rng(SEED + bits)
    dut = PLanes(config)
    lanes = config.engine_lanes

    async def testbench(ctx):
        ctx.set(dut.packing, PACKING[bits])
        held = None                            # the numerators registered at the last enabled edge
        for step in range(300):
            row_max = rng.integers(-(1 << 30), 1 << 30, lanes)
            x = row_max - rng.choice([0, 1, 255, 256, 4000, 1 << 20], lanes) - rng.integers(0, 300, lanes)
            z, valid, en = rng.integers(0, 16, lanes), bool(rng.random() < 0.8), step == 0 or rng.random() < 0.7
            for n in range(lanes):
                ctx.set(dut.x[n], int(x[n]))
                ctx.set(dut.row_max[n], int(row_max[n]))
            ctx.set(dut.key_valid, valid)
            ctx.set(dut.en, en)
            e, _ = golden.p_lanes(x, row_max, z, bits, valid, config)
            await ctx.tick()                   # stage 1's numerators into the register, if enabled
            held = e if en else held
            for n in range(lanes):             # stage 2: the registered numerators with this beat's shifts
                ctx.set(dut.z[n], int(z[n]))
            assert [ctx.get(dut.e[n]) for n in range(lanes)] == held.tolist(), f"seed {SEED}: x={x} m={row_max}"
            p = golden.p_round(held, bits, z, config)
            assert [ctx.get(dut.p[n]) for n in range(lanes)] == p.tolist(), f"seed {SEED}: e={held} z={z}"

    run(dut, testbench)


@pytest.mark.parametrize("config", [CONFIG, CONFIG2], ids=["048", "0248"])
def test_segment_shift_including_empty_segments(config):
    """Per block: ``start``, then each query group's lanes latched ``SHIFT_STAGES`` cycles after the group
    began (the first) or after the previous latch: ``z`` and the lanes' row maxima of the group's queries
    against the golden twin, at every packing, with empty segments."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    dut = SegmentShift(config)
    B, C, lanes = config.block_size, config.cols, config.engine_lanes

    async def testbench(ctx):
        for block in range(12):
            row_max = rng.integers(-(1 << 30), 1 << 30, B)
            seg_max = row_max - rng.choice([0, 3, 256, 1000, 3000, 6000], B)
            seg_max[rng.random(B) < 0.2] = LOWEST_SCORE                 # a segment with no real key
            bits = config.computed_bitwidths[block % len(config.computed_bitwidths)]
            packing = PACKING[bits]
            for q in range(B):
                ctx.set(dut.row_max[q], int(row_max[q]))
                ctx.set(dut.seg_max[q], int(seg_max[q]))
            ctx.set(dut.packing, packing)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            width = C << packing
            for group in range(B // width):
                await ctx.tick().repeat(SHIFT_STAGES - 1)
                ctx.set(dut.latch, 1)
                await ctx.tick()
                ctx.set(dut.latch, 0)
                queries = np.arange(group * width, (group + 1) * width)
                want = golden.segment_shift(row_max[queries], seg_max[queries], config)
                assert [ctx.get(dut.z[n]) for n in range(width)] == want.tolist(), f"block {block}, group {group}"
                assert [ctx.get(dut.lane_row_max[n]) for n in range(width)] == row_max[queries].tolist()
                assert width <= lanes

    run(dut, testbench)


def test_register_file_writes_reads_and_counters():
    """Control registers like the twin (writes while busy ignored, START too); totals and per-head counters
    count the same events (per head only while a head is active) and per-head values are stored at the head's
    index; status and error read back."""
    rng = np.random.default_rng(SEED)
    dut = RegisterFile(CONFIG)
    writes = [(REGISTERS[name].address, int(rng.integers(0, 1 << 32))) for name in CONTROL_REGISTERS]
    writes += [(REGISTERS["N_HEADS"].address, 5), (REGISTERS["CYCLES"].address, 99)]   # a later write wins
    registers = golden.register_file(writes, CONFIG)
    during_run = [(REGISTERS["N_HEADS"].address, 9), (REGISTERS["DESC_ADDR"].address, 1 << 12),
                  (REGISTERS["START"].address, 1)]
    after_run = golden.register_file(writes + [(a, v, True) for a, v in during_run], CONFIG)
    assert after_run == registers and golden.register_file(during_run, CONFIG)["N_HEADS"] == 9
    events = ("beat", "kept8", "kept4", "kept2", "skipped", "read_beat", "write_beat")
    beat_bytes = CONFIG.axi_data_bits // 8

    async def write(ctx, sequence, expected):
        """Bus writes (none of them a start), then the control registers must read ``expected``."""
        for address, value in sequence:
            ctx.set(dut.bus.we, 1)
            ctx.set(dut.bus.addr, address)
            ctx.set(dut.bus.wdata, value)
            assert ctx.get(dut.start) == 0
            await ctx.tick()
        ctx.set(dut.bus.we, 0)
        assert {name: ctx.get(getattr(dut, name.lower())) for name in CONTROL_REGISTERS} == expected

    async def testbench(ctx):
        await write(ctx, writes, registers)
        ctx.set(dut.bus.addr, REGISTERS["START"].address)
        ctx.set(dut.bus.wdata, 1)
        ctx.set(dut.bus.we, 1)
        assert ctx.get(dut.start) == 1
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.bus.we, 0)
        ctx.set(dut.clear, 0)
        ctx.set(dut.busy, 1)
        await write(ctx, during_run, after_run)          # ignored while busy: START too
        totals = {**dict.fromkeys(events, 0), "CYCLES": len(during_run)}      # busy during those writes
        stored = {}
        for head in (2, 0):                          # two heads, stored at their indices, with idle cycles between
            ctx.set(dut.head, head)
            ctx.set(dut.head_start, 1)
            await ctx.tick()
            ctx.set(dut.head_start, 0)
            ctx.set(dut.head_active, 1)
            counts = dict.fromkeys(("CYCLES",) + events, 0)
            for _ in range(40):
                pattern = {name: bool(rng.random() < 0.6) for name in events}
                for name, value in pattern.items():
                    ctx.set(getattr(dut, name), value)
                    counts[name] += value
                counts["CYCLES"] += 1
                await ctx.tick()
            for name in events:
                ctx.set(getattr(dut, name), 0)
            ctx.set(dut.head_active, 0)
            ctx.set(dut.head_store, 1)
            await ctx.tick()
            ctx.set(dut.head_store, 0)
            stored[head] = counts
            for name in totals:
                totals[name] += counts[name]
            totals["CYCLES"] += 2                   # busy in the head_start and head_store cycles too
        ctx.set(dut.busy, 0)
        ctx.set(dut.done, 1)
        ctx.set(dut.error, 1)
        ctx.set(dut.error_code, 7)
        ctx.set(dut.error_head, 3)
        ctx.set(dut.heads_done, 2)

        def as_counters(c):
            return {"CYCLES": c["CYCLES"], "ARRAY_BEATS": c["beat"], "STALL_CYCLES": c["CYCLES"] - c["beat"],
                    "KEPT8": c["kept8"], "KEPT4": c["kept4"], "KEPT2": c["kept2"], "SKIPPED": c["skipped"],
                    "BYTES_READ": beat_bytes * c["read_beat"], "BYTES_WRITTEN": beat_bytes * c["write_beat"]}
        for name, value in as_counters(totals).items():
            ctx.set(dut.bus.addr, REGISTERS[name].address)
            assert ctx.get(dut.bus.rdata) == value, name
        for head, counts in stored.items():
            for name, value in as_counters(counts).items():
                ctx.set(dut.bus.addr, head_counter_address(head, name))
                assert ctx.get(dut.bus.rdata) == value, (head, name)
        for name, value in (("STATUS", 0b110), ("ERROR", 7 | 3 << 8), ("HEADS_DONE", 2)):
            ctx.set(dut.bus.addr, REGISTERS[name].address)
            assert ctx.get(dut.bus.rdata) == value, name
        past_the_last_head = head_counter_address(CONFIG.max_heads - 1, "CYCLES") + COUNTER_STRIDE
        ctx.set(dut.bus.addr, past_the_last_head)
        assert ctx.get(dut.bus.rdata) == 0

    run(dut, testbench)


def _tile(config=CONFIG, **fields):
    """A tile descriptor as a dict for ``ctx.set`` (fields not given are 0)."""
    full = {"pass_b": 0, "query_group": 0, "key_group": 0, "dim_group": 0, "kept_index": 0, "key_block": 0,
            "packing": 0, "ck": 0, "cv": 0, "z": [0] * config.engine_lanes}
    full.update(fields)
    return full


@pytest.mark.parametrize("config,kept", [(CONFIG, [(0, 8), (2, 4)]), (CONFIG2, [(0, 8), (1, 2), (2, 4)])],
                         ids=["048", "0248"])
def test_score_unit_scales_stores_and_keeps_row_and_segment_maxima(config, kept):
    rng = np.random.default_rng(SEED)
    B, R = config.block_size, config.rows
    n_tokens, shift = 2 * B + 5, 14                                  # block 2 is partly padding
    s = rng.integers(-(1 << 14), 1 << 14, (B, len(kept) * B))
    cq, ck = int(rng.integers(1, 1 << 15)), rng.integers(1, 1 << 15, 3)
    cols = np.concatenate([np.arange(j * B, (j + 1) * B) for j, _ in kept])
    x, row_max, seg_max = golden.score_unit(s, cq, np.repeat([ck[j] for j, _ in kept], B),
                                            np.repeat([b for _, b in kept], B), shift, cols < n_tokens, B)
    assert (x == SCORE_LIMIT).any() and (x == -SCORE_LIMIT).any()      # scores saturate both ways
    dut = ScoreUnit(config)

    async def testbench(ctx):
        ctx.set(dut.cq, cq)
        ctx.set(dut.score_shift, shift)
        ctx.set(dut.n_tokens, n_tokens)
        ctx.set(dut.reset, 1)
        await ctx.tick()
        ctx.set(dut.reset, 0)
        written, segments = {}, {}

        async def tick():         # the beat presented before the edge is in the product register after it
            await ctx.tick()
            assert ctx.get(dut.pending) or not ctx.get(dut.wr_en)       # a beat being written is pending
            if ctx.get(dut.wr_en):
                group, key_at = ctx.get(dut.wr_group), ctx.get(dut.wr_key)
                for r in range(R):
                    written[(group * R + r) * config.max_kept_keys + key_at] = ctx.get(dut.wr_data[r])
            if ctx.get(dut.seg_wr_en):
                addr = ctx.get(dut.seg_wr_addr)
                assert addr not in segments
                segments[addr] = [ctx.get(dut.seg_wr_data[q]) for q in range(B)]
        for index, (j, bits) in enumerate(kept):
            width = config.cols << PACKING[bits]
            factor = int(ck[j]) << golden.K_REDUCE_SHIFT[bits]
            for key_group in range(B // width):
                for query_group in range(B // R):
                    ctx.set(dut.tile, _tile(config, query_group=query_group, key_group=key_group, kept_index=index,
                                            key_block=j, packing=PACKING[bits], ck=factor))
                    for beat in range(width):
                        key = key_group * width + beat
                        ctx.set(dut.valid, 1)
                        ctx.set(dut.beat, beat)
                        for r in range(R):
                            ctx.set(dut.column[r], int(s[query_group * R + r, index * B + key]))
                        await tick()
                        ctx.set(dut.valid, 0)
                        block_end = (key_group, query_group, beat) == (B // width - 1, B // R - 1, width - 1)
                        if rng.random() < 0.3 and not block_end:   # gaps between drained beats; none after a
                            await tick()                           # block's last (its segment write overlaps)
        await tick()              # the last beat in stage 2, its scores
        assert ctx.get(dut.pending) and ctx.get(dut.wr_en)
        await tick()              # the last beat leaves stage 3: its scores are written, the maxima final
        assert not ctx.get(dut.pending)
        expected = {q * config.max_kept_keys + c: int(x[q, c]) for q in range(B) for c in range(len(kept) * B)}
        assert written == expected
        assert [ctx.get(dut.row_max[q]) for q in range(B)] == row_max.tolist()
        await tick()
        assert segments == {n: seg_max[:, n].tolist() for n in range(len(kept))}

    run(dut, testbench)


def test_tile_queue_pairs_every_beat_with_its_tile():
    rng = np.random.default_rng(SEED)
    dut = TileQueue(CONFIG2)
    lanes = CONFIG2.engine_lanes
    tiles = [_tile(CONFIG2, pass_b=int(rng.integers(2)), query_group=n, packing=int(rng.integers(3)),
                   z=rng.integers(0, 16, lanes).tolist()) for n in range(12)]
    beats = [CONFIG2.cols << t["packing"] for t in tiles]
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
                got.append((tile.query_group, tile.pass_b, [tile.z[n] for n in range(lanes)], ctx.get(dut.beat)))
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
    B, R, groups = CONFIG2.block_size, CONFIG2.rows, CONFIG2.head_dim // CONFIG2.rows
    blocks = [(8, int(rng.integers(1, 1 << 15))), (4, int(rng.integers(1, 1 << 15))),
              (2, golden.CV2_FROM_CV4 * int(rng.integers(1, 1 << 15)))]
    u = rng.integers(-(1 << 12), 1 << 12, (len(blocks), B, CONFIG2.head_dim))
    z = rng.integers(0, 16, (len(blocks), B))
    acc = np.zeros((B, CONFIG2.head_dim), dtype=np.int64)
    for index, (_, cv) in enumerate(blocks):
        acc = golden.output_accumulator(acc, u[index], cv, z[index], first=index == 0)
    dut = OutputAccumulator(CONFIG2)

    async def testbench(ctx):
        for index, (bits, cv) in enumerate(blocks):
            width = CONFIG2.cols << PACKING[bits]
            for query_group in range(B // width):
                lanes_z = z[index, query_group * width:(query_group + 1) * width].tolist()
                for dim_group in range(groups):
                    ctx.set(dut.tile, _tile(CONFIG2, pass_b=1, query_group=query_group, dim_group=dim_group,
                                            kept_index=index, packing=PACKING[bits], cv=cv,
                                            z=lanes_z + [0] * (CONFIG2.engine_lanes - width)))
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
    row_sum[:3] = [0, 1, (1 << CONFIG.row_sum_width) - 1]          # the divider's extremes (0: no real key)
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
        ctx.set(stage.start, 1)
        await ctx.tick()
        ctx.set(stage.start, 0)
        ctx.set(stage.o.ready, 1)
        for _ in range(CONFIG.recip_stages + 1):                      # the read and the divider fill
            assert ctx.get(stage.o.valid) == 0
            await ctx.tick()
        assert ctx.get(stage.o.valid) == 1
        got = []
        for _ in range(20 * B * groups):
            ready = rng.random() < 0.6
            ctx.set(stage.o.ready, ready)
            if ready and ctx.get(stage.o.valid):
                beat = ctx.get(stage.o.payload)
                got.append([beat.o[r] for r in range(R)])
            await ctx.tick()
            if ctx.get(stage.idle):
                break
        expected = [codes[q, g * R:(g + 1) * R].tolist() for q in range(B) for g in range(groups)]
        assert got == expected

    run(m, testbench)


@pytest.mark.parametrize("config,first", [(CONFIG, 0), (CONFIG, 1), (CONFIG2, 0)], ids=["048-0", "048-1", "0248-0"])
def test_engine_controller_issues_the_golden_tile_order(config, first):
    """The controller with a real block scheduler and an always-ready datapath issues exactly the tiles of
    :func:`golden.engine_controller` for the query blocks from ``first`` on, in order, then raises ``done``."""
    rng = np.random.default_rng(SEED)
    nb = 3 if config is CONFIG else 4
    bitmap = rng.choice(config.bitwidths, (nb, nb))
    bitmap[np.arange(nb), rng.integers(0, nb, nb)] = 8               # every query row keeps a block
    expected = [t for t in golden.engine_controller(bitmap, config) if t["query_block"] >= first]
    m = Module()
    m.submodules.ctrl = ctrl = EngineController(config)
    m.submodules.sched = sched = BlockScheduler(config)
    wiring.connect(m, sched.o, ctrl.kept)
    m.d.comb += [sched.start.eq(ctrl.sched_start), sched.row.eq(ctrl.sched_row), sched.count.eq(ctrl.sched_count),
                 sched.n_blocks.eq(nb), ctrl.row_first.eq(first), ctrl.row_end.eq(nb),
                 ctrl.n_tokens.eq(nb * config.block_size), ctrl.advance.eq(1), ctrl.tile_room.eq(1),
                 ctrl.tiles_empty.eq(1), ctrl.out_idle.eq(1)]
    half_lines = engine_buffers(config)["bitmap_rows"]["entries"] // 2

    async def testbench(ctx):
        ctx.set(ctrl.start, 1)
        await ctx.tick()
        ctx.set(ctrl.start, 0)
        got, counted, loaded = [], {"kept8": 0, "kept4": 0, "kept2": 0, "skipped": 0}, set()
        for _ in range(200_000):
            # The fetcher's part: a wanted query block's bitmap row goes into half i % 2 before it is ready.
            want = ctx.get(ctrl.want.payload)
            wants_row = ctx.get(ctrl.want.valid) and want.kind == WANT_Q and want.block not in loaded
            ctx.set(ctrl.want.ready, not wants_row)
            ctx.set(sched.wr_en, wants_row)
            if wants_row:
                ctx.set(sched.wr_addr, (want.block % 2) * half_lines)
                ctx.set(sched.wr_data, int.from_bytes(bytes(bitmap[want.block].tolist()), "little"))
                loaded.add(want.block)
            for name in counted:
                counted[name] += ctx.get(getattr(sched, name))
            if ctx.get(ctrl.tile_push):
                tile = ctx.get(ctrl.tile)
                entry = {"pass_b": tile.pass_b, "query_block": ctx.get(ctrl.sched_row), "key_block": tile.key_block,
                         "kept_index": tile.kept_index, "packing": tile.packing, "query_group": tile.query_group}
                entry["dim_group" if tile.pass_b else "key_group"] = tile.dim_group if tile.pass_b else tile.key_group
                got.append(entry)
            await ctx.tick()
            if ctx.get(ctrl.done):
                break
        assert got == expected
        assert ctx.get(ctrl.done) == 1 and ctx.get(ctrl.busy) == 0
        computed = bitmap[first:]
        assert counted == {"kept8": (computed == 8).sum(), "kept4": (computed == 4).sum(),
                           "kept2": (computed == 2).sum(), "skipped": (computed == 0).sum()}

    run(m, testbench)


def _capture(ctx, feed, bits, pass_b):
    """The array operands of the beat the feed offers: (A column, B column values)."""
    a = [ctx.get(feed.a.payload.a[r]) for r in range(feed.config.rows)]
    words = [ctx.get(feed.b.payload.b[c].int8) & 0xFF for c in range(feed.config.cols)]
    mode = PEMode.for_block(bits, "pv" if pass_b else "qk")
    assert ctx.get(feed.a.payload.mode) == mode
    return a, golden.unpack_operand_b(np.array(words), mode).tolist()


@pytest.mark.parametrize("pass_b", [0, 1], ids=["qk", "pv"])
@pytest.mark.parametrize("config,bits", EVERY_BITS + [(CONFIG2, 4), (CONFIG2, 8)],
                         ids=["8", "4", "2", "4-in-0248", "8-in-0248"])
def test_operand_feed_builds_the_golden_tile_operands(config, bits, pass_b):
    rng = np.random.default_rng(SEED + 2 * pass_b + bits)
    B, R, d, lanes = config.block_size, config.rows, config.head_dim, config.engine_lanes
    width = config.cols << PACKING[bits]
    q8, k8, v8 = (rng.integers(-128, 128, (B, d)) for _ in range(3))
    tile = {"pass_b": pass_b, "query_block": 0, "key_block": 0, "packing": PACKING[bits], "query_group": 1,
            "key_group": 1, "dim_group": 0}
    # PV: scores of the tile's queries (lanes) against the block's keys, their row maxima, segment shifts.
    x = rng.integers(-5000, 0, (width, B))
    row_max = np.zeros(B, dtype=np.int64)
    z = rng.integers(0, 4, width)
    n_tokens = B - 3                                                 # the last 3 keys are padding
    e, p = golden.p_lanes(x.T, 0, z, bits, True, config)
    e, p = np.where(np.arange(B)[:, None] < n_tokens, e, 0).T, np.where(np.arange(B)[:, None] < n_tokens, p, 0).T
    p_block = np.zeros((B, B), dtype=np.int64)
    p_block[width:2 * width] = p
    a_want, b_want, _ = golden.operand_feed(tile, q8, k8, v8, p_block, config)
    depth = B if pass_b else d
    dut = OperandFeed(config)

    async def testbench(ctx):
        ctx.set(dut.reset_sums, 1)
        await ctx.tick()
        ctx.set(dut.reset_sums, 0)
        ctx.set(dut.a.ready, 1)
        ctx.set(dut.b.ready, 1)
        columns = []
        for k in range(depth + 2):
            ctx.set(dut.fire, k < depth)
            if k < depth:
                ctx.set(dut.cmd, {"pass_b": pass_b, "step": k, "dim_group": 0, "query_group": 1,
                                  "packing": PACKING[bits], "last": k == depth - 1, "key_valid": k < n_tokens,
                                  "first_dim_group": 1, "z": [int(z[n]) if n < width else 0 for n in range(lanes)],
                                  "row_max": [int(row_max[width + n]) if n < width else 0 for n in range(lanes)]})
            if 0 < k <= depth:                                       # stage 1 holds beat k - 1: its read data
                ctx.set(dut.v_row, v8[k - 1].tolist())
                for port, rows, readers in ((dut.q_words, q8[R:2 * R], R), (dut.k_words, k8[width:], lanes)):
                    wb = row_buffer_geometry(config, 2 * B, readers)["word_bytes"]
                    word = (k - 1) % d // wb                         # the word of the step, as the buffers give
                    for n in range(readers):
                        used = readers == R or n < width                # K lanes past the tile's keys: 0
                        ctx.set(port[n], rows[n, word * wb:(word + 1) * wb].tolist() if used else [0] * wb)
                for n in range(width):
                    ctx.set(dut.scores[n], int(x[n, k - 1]))
            assert ctx.get(dut.a.valid) == (k >= 2) and ctx.get(dut.busy) == (0 < k)
            if k >= 2:                                               # stage 2 offers beat k - 2
                assert ctx.get(dut.beat) == 1
                columns.append(_capture(ctx, dut, bits, pass_b))
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
                ctx.set(dut.o.payload, {"o": [int(x) for x in beat]})
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
    """A head's wants (the sequencer's descriptor and table; the controller's Q per row, K and V of each kept
    block per pass, with the next block of the pass hinted while one computes) are served with exactly the
    golden fetcher's requests (prefetches included), every line lands in its buffer (a Q block's bitmap row
    in the same half), and ``want`` is answered only once the rows are on chip; with 2 cache slots blocks are
    evicted and fetched again, early when hinted."""
    rng = np.random.default_rng(SEED)
    cfg = AcceleratorConfig(**{**CONFIG.to_dict(), "kv_cache_blocks": slots})
    B, d, nb = cfg.block_size, cfg.head_dim, 4
    bitmap = rng.choice([0, 4, 8], (nb, nb))
    bitmap[np.arange(nb), np.arange(nb)] = 8
    bases = {"desc": 0x1000, "table": 0x2000, "bitmap": 0x3000, "q": 0x4000, "k": 0x8000, "v": 0xC000}
    descriptor = {"TABLE_ADDR": bases["table"], "BITMAP_ADDR": bases["bitmap"], "Q_ADDR": bases["q"],
                  "K_ADDR": bases["k"], "V_ADDR": bases["v"], "N_BLOCKS": nb, "ROW_FIRST": 0, "ROW_COUNT": nb}
    head = 1
    expected = golden.fetcher(bitmap, descriptor, cfg, bases["desc"] + head * descriptor_stride(cfg))
    wants = []
    for i, row in enumerate(bitmap):
        wants.append((WANT_Q, i))
        wants += [(WANT_K, int(j)) for j in np.flatnonzero(row)] + [(WANT_V, int(j)) for j in np.flatnonzero(row)]
    dut = Fetcher(cfg)
    half_lines = engine_buffers(cfg)["bitmap_rows"]["entries"] // 2
    sizes = {"desc": descriptor_stride(cfg), "table": 0x1000, "bitmap": bitmap_stride(cfg, nb), "q": B * d,
             "k": B * d, "v": B * d}

    def decode(address):
        """(buffer, block) of a request address."""
        name = max((n for n in bases if address >= bases[n]), key=lambda n: bases[n])
        return name, (address - bases[name]) // sizes[name]

    async def testbench(ctx):
        for name in bases:
            ctx.set(getattr(dut, f"{name}_addr"), bases[name])
        ctx.set(dut.bitmap_lines, bitmap_stride(cfg, nb) // d)
        ctx.set(dut.table_lines, table_bytes(cfg, nb) // d)
        ctx.set(dut.row_end, nb)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        requests, landed = [], {}

        async def serve_request():
            address, lines = ctx.get(dut.req.payload.addr), ctx.get(dut.req.payload.rows)
            requests.append((address, lines))
            name, block = decode(address)
            ctx.set(dut.req.ready, 1)
            await ctx.tick()
            ctx.set(dut.req.ready, 0)
            first = None
            for n in range(lines):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.row.payload, [n - 8] * cfg.head_dim)
                ctx.set(dut.row.valid, 1)
                assert ctx.get(dut.row.ready)
                assert [ctx.get(getattr(dut, f"{t}_we")) for t in bases] == [t == name for t in bases]
                first = ctx.get(dut.wr_addr) if first is None else first
                assert ctx.get(dut.wr_addr) == first + n
                await ctx.tick()
                ctx.set(dut.row.valid, 0)
            landed[name, block] = first
            return name, block

        async def want(port, kind, block):
            ctx.set(port.payload, {"kind": kind, "block": block})
            ctx.set(port.valid, 1)
            while not ctx.get(port.ready):
                if ctx.get(dut.req.valid):
                    await serve_request()
                else:
                    await ctx.tick()
            slot = ctx.get(dut.slot)
            await ctx.tick()
            ctx.set(port.valid, 0)
            return slot

        await want(dut.meta, WANT_DESC, head)
        await want(dut.meta, WANT_TABLE, 0)
        assert landed["desc", head] == 0 and landed["table", 0] == 0
        early, names = 0, {WANT_K: "k", WANT_V: "v"}
        for n, (kind, block) in enumerate(wants):
            slot = await want(dut.want, kind, block)
            if kind == WANT_Q:
                assert landed["q", block] == (block % 2) * B and landed["bitmap", block] == (block % 2) * half_lines
            else:
                assert landed[names[kind], block] == slot * B           # in the slot it names
            following = wants[n + 1] if n + 1 < len(wants) else (None, None)
            if kind != WANT_Q and following[0] == kind:             # the controller hints the pass's next block
                ctx.set(dut.hint, {"kind": following[0], "block": following[1]})
                ctx.set(dut.hint_valid, 1)
            for _ in range(int(rng.integers(0, 3 * B))):           # the array computes; prefetches run
                if ctx.get(dut.req.valid):
                    early += await serve_request() == (names.get(following[0]), following[1])
                await ctx.tick()
            ctx.set(dut.hint_valid, 0)
        assert sorted(requests) == sorted(expected) and len(requests) == len(expected)
        if slots == 2:
            assert len(expected) > 2 * nb + 2 + 2 * len(np.flatnonzero(bitmap.any(axis=0)))   # refetches
            assert early > 0                                        # hinted blocks fetched before their want

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


#: Descriptor tests: heads of 20 blocks, whose output region (20 KiB) can run past the address space.
DESC_CONFIG = AcceleratorConfig(**{**CONFIG.to_dict(), "max_seq_len": 512})
DESC_BLOCKS = 20


def _descriptor_cases(cfg, rng):
    """A legal descriptor of a 20-block head, then per rule (in order) one that breaks it, then wide values."""
    desc_addr, [addresses] = layer_memory_map(cfg, [DESC_BLOCKS])
    base = {**addresses, "N_TOKENS": DESC_BLOCKS * cfg.block_size - 3, "N_BLOCKS": DESC_BLOCKS, "SCORE_SHIFT": 20,
            "FINAL_SHIFT": 30, "ROW_FIRST": 1, "ROW_COUNT": DESC_BLOCKS - 1}
    broken = {
        2: {"N_BLOCKS": 0}, 3: {"N_TOKENS": 0}, 4: {"ROW_FIRST": 2, "ROW_COUNT": DESC_BLOCKS - 1},
        5: {"SCORE_SHIFT": 11},
        6: {"FINAL_SHIFT": 128}, 7: {"TABLE_ADDR": base["TABLE_ADDR"] + 64}, 8: {"O_ADDR": (1 << 32) - 4096},
        9: {"O_ADDR": base["V_ADDR"]}, 10: {"SPEC": 3},
    }
    cases = [(0, base)] + [(code, {**base, **change}) for code, change in broken.items()]
    # speculation: only a build with it takes SPEC = 1, and only with 0 <= negligible < important <= 2**16
    legal = {"SPEC": 1, "SPEC_IMPORTANT": 1 << 16, "SPEC_NEGLIGIBLE": (1 << 16) - 1}
    cases += [(0 if cfg.spec_lanes else 10, {**base, **legal}),
              (10, {**base, **legal, "SPEC_NEGLIGIBLE": 1 << 16}), (10, {**base, **legal, "SPEC_IMPORTANT": 0}),
              (10, {**base, **legal, "SPEC_IMPORTANT": (1 << 16) + 1}), (10, {**base, "SPEC_NEGLIGIBLE": 1})]
    cases += [(None, {**base, "N_BLOCKS": int(rng.integers(1, 1 << 32))}),          # wide values, never truncated
              (None, {**base, "N_TOKENS": (1 << 32) - 1}), (None, {**base, "O_ADDR": desc_addr})]
    return desc_addr, cases


@pytest.mark.parametrize("spec_lanes", [0, 8], ids=["no-speculation", "speculation"])
def test_descriptor_unit_checks_like_its_twin(spec_lanes):
    """Each rule broken in turn (and wide values that a truncating datapath would take): the unit's code equals
    golden.descriptor_check after CHECK_LATENCY cycles; fields and line counts of a legal descriptor read back;
    list_error follows the list rule. In a build with speculation and one without (which refuses SPEC = 1)."""
    rng = np.random.default_rng(SEED)
    cfg = dataclasses.replace(DESC_CONFIG, spec_lanes=spec_lanes)
    dut = DescriptorUnit(cfg)
    desc_addr, cases = _descriptor_cases(cfg, rng)
    d = cfg.head_dim

    async def testbench(ctx):
        for n_heads, address in ((1, desc_addr), (0, desc_addr), (cfg.max_heads + 1, desc_addr),
                                 (2, desc_addr + 64), (cfg.max_heads, desc_addr)):
            ctx.set(dut.desc_addr, address)
            ctx.set(dut.n_heads, n_heads)
            assert ctx.get(dut.list_error) == (list_problem(cfg, address, n_heads)[0] == 1), (n_heads, address)
        ctx.set(dut.desc_addr, desc_addr)
        ctx.set(dut.n_heads, 1)
        for code, fields in cases:
            line_bytes = np.asarray(descriptor_words(fields), dtype="<u4").tobytes()
            for line in range(descriptor_lines(cfg)):
                ctx.set(dut.we, 1)
                ctx.set(dut.addr, line)
                ctx.set(dut.data, int.from_bytes(line_bytes[line * d:(line + 1) * d], "little"))
                await ctx.tick()
            ctx.set(dut.we, 0)
            for _ in range(CHECK_LATENCY):
                await ctx.tick()
            want = golden.descriptor_check(cfg, fields, desc_addr, 1)
            assert code is None or want == code, (code, want)
            assert ctx.get(dut.error) == want, fields
            if want == 0:
                assert all(ctx.get(getattr(dut, f.name.lower())) == descriptor_fields(fields)[f.name]
                           for f in DESCRIPTOR)
                assert ctx.get(dut.bitmap_lines) == bitmap_stride(cfg, DESC_BLOCKS) // d
                assert ctx.get(dut.table_lines) == table_bytes(cfg, DESC_BLOCKS) // d

    run(dut, testbench)


def test_block_table_reads_records_like_its_twin():
    rng = np.random.default_rng(SEED)
    dut = BlockTable(CONFIG)
    nb, d = CONFIG.max_blocks, CONFIG.head_dim
    records = rng.integers(1, 1 << 15, (nb, len(TABLE_FIELDS)))
    table = records.astype("<u2").tobytes()
    table += bytes(table_bytes(CONFIG, nb) - len(table))

    async def testbench(ctx):
        for line in range(len(table) // d):
            ctx.set(dut.we, 1)
            ctx.set(dut.addr, line)
            ctx.set(dut.data, int.from_bytes(table[line * d:(line + 1) * d], "little"))
            await ctx.tick()
        ctx.set(dut.we, 0)
        for block in rng.permutation(nb):
            want = golden.block_table(table, int(block))
            for name in TABLE_FIELDS:
                ctx.set(getattr(dut, f"{name.lower()}_addr"), int(block))
                assert ctx.get(getattr(dut, f"{name.lower()}_data")) == want[name], (block, name)

    run(dut, testbench)


@pytest.mark.parametrize("bad", [None, (2, 3), "list"], ids=["all-pass", "head2-refused", "list-refused"])
def test_layer_sequencer_orders_checks_and_heads_like_its_twin(bad):
    """Meta wants served after random delays, descriptor codes from golden.descriptor_check, a controller busy
    for a while per head: the events equal golden.layer_sequencer's, and nothing runs after a refusal."""
    rng = np.random.default_rng(SEED)
    dut = LayerSequencer(DESC_CONFIG)
    n_heads = 4
    desc_addr, cases = _descriptor_cases(DESC_CONFIG, rng)
    descriptors = [dict(cases[0][1]) for _ in range(n_heads)]
    if isinstance(bad, tuple):
        code, head = bad
        descriptors[head] = dict(cases[code - 1][1])
    list_heads = 0 if bad == "list" else n_heads
    expected = golden.layer_sequencer(DESC_CONFIG, descriptors, desc_addr, list_heads)

    async def testbench(ctx):
        ctx.set(dut.n_heads, list_heads)
        ctx.set(dut.list_error, list_problem(DESC_CONFIG, desc_addr, list_heads)[0] == 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        events, running, busy_left = [], False, 0
        for _ in range(5_000):
            if ctx.get(dut.done):
                break
            ctx.set(dut.head_busy, busy_left > 0)
            busy_left = max(0, busy_left - 1)
            served = ctx.get(dut.meta.valid) and rng.random() < 0.4
            ctx.set(dut.meta.ready, served)
            if served:
                kind, block = ctx.get(dut.meta.payload.kind), ctx.get(dut.meta.payload.block)
                if kind == WANT_DESC:
                    events.append(("descriptor" if running else "check", block))
                    code = golden.descriptor_check(DESC_CONFIG, descriptors[block], desc_addr, n_heads)
                    ctx.set(dut.desc_error, code)
                else:
                    events.append(("table", ctx.get(dut.head)))
            if ctx.get(dut.head_start):
                running = True
            if ctx.get(dut.run):
                events.append(("run", ctx.get(dut.head)))
                busy_left = int(rng.integers(1, 20))
            await ctx.tick()
        assert ctx.get(dut.done) and not ctx.get(dut.busy)
        if ctx.get(dut.error):
            events.append(("error", ctx.get(dut.error_code), ctx.get(dut.error_head)))
        assert events == expected
        assert ctx.get(dut.heads_done) == sum(1 for e in expected if e[0] == "run")

    run(dut, testbench)


@pytest.mark.parametrize("bitwidths, k4_cut, k2_cut", [((0, 4, 8), "leading-zero", "block"),
                                                    ((0, 2, 4, 8), "leading-zero", "leading-zero"),
                                                    ((0, 2, 4, 8), "round", "leading-zero")])
def test_array_leading_zero_cut_tiles(bitwidths, k4_cut, k2_cut):
    """The array built with leading-zero cuts: INT4 / INT2 tiles whose K values are cut at the leading zero
    (mantissas in ``b``, exponents beside them) drain ``A @ (m << e).T`` (golden, wrapped), between INT8 tiles
    (and tiles of the other reduced mode, whose exponents are 0), the exponents skewed and moved down each
    column with ``b``."""
    from paro.hw.array import SystolicArray, a_layout, b_layout
    from paro.config import PEMode
    config = dataclasses.replace(CONFIG, bitwidths=bitwidths, k4_cut=k4_cut, k2_cut=k2_cut)
    dut = SystolicArray(config)
    R, C, depth, lanes = config.rows, config.cols, 16, config.k_exponents
    gen = np.random.default_rng(20261129)
    print("seed 20261129")
    tiles = []
    modes = [mode for mode in (PEMode.INT4, PEMode.INT8, PEMode.INT2, PEMode.INT4) if mode in config.modes]
    for mode in modes:
        per = mode.products_per_cycle
        k8 = gen.integers(-128, 128, size=(C * per, depth))
        a = gen.integers(-128, 128, size=(R, depth))
        if mode.bits < 8 and config.k_cuts[mode.bits] == "leading-zero":
            operand, exponent = golden.reduce_int8_lz(k8, mode.bits)
        else:
            operand, exponent = (golden.k_reduction(k8, mode.bits) if mode.bits < 8 else k8), np.zeros_like(k8)
        words = golden.pack_operand_b(operand.T, mode)
        exps = [[[int(exponent[per * c + n, k]) if n < per and per > 1 else 0 for n in range(lanes)]
                 for c in range(C)] for k in range(depth)]
        expected = golden.wrap(golden._int_matmul(a, operand << exponent), config.acc_width)
        tiles.append((a, words, exps, mode, expected))
    la, lb = a_layout(config), b_layout(config)
    drained = []

    async def testbench(ctx):
        ctx.set(dut.c.ready, 1)
        beats = [(la.const({"a": [int(x) for x in a[:, k]], "mode": mode, "last": k == depth - 1}),
                  lb.const({"b": [{"int8": int(w) - 256 if w >= 128 else int(w)} for w in words[k]],
                            "exp": exps[k]}))
                 for a, words, exps, mode, _ in tiles for k in range(depth)]
        for beat_a, beat_b in beats:
            ctx.set(dut.a.payload, beat_a)
            ctx.set(dut.b.payload, beat_b)
            ctx.set(dut.a.valid, 1)
            ctx.set(dut.b.valid, 1)
            while True:
                ready = ctx.get(dut.a.ready)
                if ctx.get(dut.c.valid):
                    drained.append([ctx.get(dut.c.payload.c[r]) for r in range(R)])
                await ctx.tick()
                if ready:
                    break
        ctx.set(dut.a.valid, 0)
        ctx.set(dut.b.valid, 0)
        for _ in range(8 * (R + C + depth)):
            if ctx.get(dut.c.valid):
                drained.append([ctx.get(dut.c.payload.c[r]) for r in range(R)])
            await ctx.tick()

    run(dut, testbench)
    expected = [list(map(int, column)) for *_, tile in tiles for column in tile.T]
    assert drained == expected
