"""cocotb benches of the systolic array (``hw/array.py``) against ``sw.golden.array_tile``, bit for bit.

Run on Icarus and Verilator for 2x2, 4x4, 8x8 and a non-square 2x4 array. Every stream sees random valid
gaps (sources) and random ready back-pressure (sink) except where a test measures that nothing stalls.
"""

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge

from paro.config import PEMode
from paro.sim.array_driver import ArrayHarness, random_tile, tile_beats
from paro.sim.streams import bench_config, bench_rng, reset, start_clock


async def _start(dut):
    await start_clock(dut)
    dut.a__valid.value = 0
    dut.b__valid.value = 0
    dut.c__ready.value = 0
    await reset(dut)


@cocotb.test()
async def array_random_tiles(dut):
    """Random tiles in every supported mode and random depth 1..depth, random gaps and back-pressure."""
    config = bench_config()
    rng = bench_rng("array_random_tiles")
    await _start(dut)
    tiles = [random_tile(rng, config, mode, depth)
             for mode in config.modes for depth in (1, 2, config.depth, rng.randint(3, config.depth))]
    rng.shuffle(tiles)
    harness = ArrayHarness(dut, config, rng, gap=0.3, stall=0.3)
    harness.start_sink()
    await harness.send(tiles)
    total = sum(b.shape[0] for _, b, _ in tiles)
    await harness.wait_beats(total, 100 * total + 1000)
    harness.check(tiles)


@cocotb.test()
async def array_mode_switch_back_to_back(dut):
    """Full-depth tiles whose mode changes every tile, no gaps, ready sink: no input cycle is lost."""
    config = bench_config()
    rng = bench_rng("array_mode_switch_back_to_back")
    await _start(dut)
    modes = list(config.modes) * 3
    tiles = [random_tile(rng, config, mode, config.depth) for mode in modes]
    harness = ArrayHarness(dut, config, rng, stamp=True)
    harness.start_sink()
    await harness.send(tiles)
    total = sum(b.shape[0] for _, b, _ in tiles)
    await harness.wait_beats(total, 10 * total + 1000)
    harness.check(tiles)
    cycles = harness.src_a.transfer_cycles
    assert cycles[-1] - cycles[0] == len(cycles) - 1, \
        f"inputs took {cycles[-1] - cycles[0] + 1} cycles for {len(cycles)} beats: the mode switch stalled"


@cocotb.test()
async def array_reset_mid_tile(dut):
    """Reset with one tile draining (sink stalled) and the next half sent: afterwards only new tiles appear."""
    config = bench_config()
    rng = bench_rng("array_reset_mid_tile")
    await _start(dut)
    mode = config.modes[-1]
    first = random_tile(rng, config, mode, config.depth)
    half_a, half_b, _ = random_tile(rng, config, PEMode.INT8, config.depth)
    harness = ArrayHarness(dut, config, rng, gap=0.2, stall=0.2)
    # Phase 1: no sink, so the first tile's drain is pending; then half a tile (no `last`) follows.
    await harness.send([first])
    a_beats, b_beats = tile_beats(config, half_a, half_b, PEMode.INT8)
    half = config.depth // 2
    task_b = cocotb.start_soon(harness.src_b.send(b_beats[:half]))
    await harness.src_a.send(a_beats[:half])
    await task_b
    for _ in range(config.rows + config.cols):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    assert dut.c__valid.value == 1, "the first tile should be waiting to drain"
    await RisingEdge(dut.clk)
    await reset(dut)
    await FallingEdge(dut.clk)
    assert dut.c__valid.value == 0, "reset must drop the pending drain"
    await RisingEdge(dut.clk)
    # Phase 2: fresh tiles after reset must come out exactly, with nothing left over from before.
    tiles = [random_tile(rng, config, m, rng.randint(1, config.depth)) for m in config.modes]
    harness.start_sink()
    await harness.send(tiles)
    total = sum(b.shape[0] for _, b, _ in tiles)
    await harness.wait_beats(total, 100 * total + 1000)
    for _ in range(2 * config.depth):
        await RisingEdge(dut.clk)
    harness.check(tiles)

