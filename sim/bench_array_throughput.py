"""cocotb throughput bench of the systolic array (not a test: ``paro bench array`` / ``make bench-array``).

For each mode the config supports it runs one tile alone (latency: fill + compute + drain) and then
``TILES`` full-depth tiles back to back with no gaps and a ready sink (steady state), checks every result
against the golden model, and writes the cycle counts as JSON to ``$PARO_BENCH_OUT``.
"""

import json
import os

import cocotb
from cocotb.triggers import RisingEdge

from paro.sim.array_driver import ArrayHarness, random_tile
from paro.sim.streams import bench_config, bench_rng, reset, start_clock

TILES = 8


async def _measure(dut, config, rng, mode, count):
    harness = ArrayHarness(dut, config, rng, stamp=True)
    tiles = [random_tile(rng, config, mode, config.depth) for _ in range(count)]
    harness.start_sink()
    await harness.send(tiles)
    total = sum(b.shape[0] for _, b, _ in tiles)
    await harness.wait_beats(total, 10 * total * config.depth + 1000)
    harness.sink_task.cancel()
    harness.check(tiles)
    first_in, last_out = harness.src_a.transfer_cycles[0], harness.sink.transfer_cycles[-1]
    for _ in range(4):
        await RisingEdge(dut.clk)
    return last_out - first_in + 1


@cocotb.test()
async def array_throughput(dut):
    config = bench_config()
    rng = bench_rng("array_throughput")
    await start_clock(dut)
    dut.a__valid.value = 0
    dut.b__valid.value = 0
    dut.c__ready.value = 0
    await reset(dut)
    records = []
    for mode in config.modes:
        single = await _measure(dut, config, rng, mode, 1)
        many = await _measure(dut, config, rng, mode, TILES)
        ppc = mode.products_per_cycle
        macs = TILES * config.rows * config.cols * ppc * config.depth
        ideal = macs // (config.rows * config.cols * ppc)
        steady = (many - single) / (TILES - 1)
        records.append({
            "rows": config.rows, "cols": config.cols, "mode": mode.name, "depth": config.depth,
            "tiles": TILES, "products_per_pe_per_cycle": ppc, "macs": macs,
            "cycles": many, "ideal_cycles": ideal, "utilization": ideal / many,
            "single_tile_cycles": single, "fill_drain_cycles": single - config.depth,
            "steady_cycles_per_tile": steady, "steady_utilization": config.depth / steady,
            "products_per_cycle": macs / many,
        })
    with open(os.environ["PARO_BENCH_OUT"], "w") as f:
        json.dump(records, f)
