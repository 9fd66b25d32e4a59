"""cocotb bench of SimPicker's pooling unit (``hw/pooling.py``) against ``sw.golden.pooled_codes``: random
INT8 rows with the extremes and rounding ties, random gaps on ``i`` and back-pressure on ``o``; every pooled
code compared, block by block."""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from paro.hw.pooling import pooled_layout
from paro.sim.streams import StreamSink, StreamSource, bench_config, bench_rng, reset, start_clock
from paro.sw.golden import pooled_codes


async def run_blocks(dut, name, gap, stall, blocks=12):
    config = bench_config()
    rng = bench_rng(name)
    B, d = config.block_size, config.head_dim
    layout = pooled_layout(config)
    rows = [[rng.choice([-128, 127, 0, -1, 1]) if rng.random() < 0.3 else rng.randint(-128, 127)
             for _ in range(d)] for _ in range(blocks * B)]
    for r in range(B):                                        # block 0: a +0.5 and a -0.5 tie
        rows[r][0], rows[r][1] = (1, -1) if r < B // 2 else (0, 0)
    want = pooled_codes(np.array(rows), B)
    await start_clock(dut)
    await reset(dut)
    sink = StreamSink(dut, "o", rng, stall=stall)
    cocotb.start_soon(sink.run())
    await StreamSource(dut, "i", rng, gap=gap).send([layout.const(row).as_bits() for row in rows])
    while len(sink.beats) < blocks:
        await RisingEdge(dut.clk)
    for n, bits in enumerate(sink.beats):
        view = layout.from_bits(bits)
        got = [view[k] for k in range(d)]
        assert got == want[n].tolist(), f"block {n}: got {got}, golden {want[n].tolist()}"
    dut._log.info(f"{blocks} blocks of {B} rows pooled bit-exact")


@cocotb.test()
async def pooling_blocks(dut):
    """Rows back to back, no gaps or stalls."""
    await run_blocks(dut, "pooling_blocks", gap=0.0, stall=0.0)


@cocotb.test()
async def pooling_gaps_and_back_pressure(dut):
    """Random gaps on the rows and back-pressure on the pooled rows."""
    await run_blocks(dut, "pooling_gaps_and_back_pressure", gap=0.3, stall=0.4)
