"""cocotb bench of SimPicker's row packer (``hw/row_packer.py``, groups of ``rows``) against
``sw.golden.row_packer``: masks from empty to full, random gaps on ``mask`` and back-pressure on ``o``; every
row, group end, block end and empty flag compared, in order."""

import cocotb
from cocotb.triggers import RisingEdge

from paro.hw.row_packer import packed_layout
from paro.sim.streams import StreamSink, StreamSource, bench_config, bench_rng, reset, start_clock
from paro.sw.golden import row_packer


async def run_masks(dut, name, gap, stall, count=40):
    config = bench_config()
    rng = bench_rng(name)
    B, group = config.block_size, config.rows
    masks = [[False] * B, [True] * B]
    while len(masks) < count:
        density = rng.choice([0.05, 0.3, 0.7, 0.95])
        masks.append([rng.random() < density for _ in range(B)])
    want = [beat for mask in masks for beat in row_packer(mask, group)]
    await start_clock(dut)
    await reset(dut)
    sink = StreamSink(dut, "o", rng, stall=stall)
    cocotb.start_soon(sink.run())
    await StreamSource(dut, "mask", rng, gap=gap).send([sum(1 << n for n, bit in enumerate(m) if bit) for m in masks])
    while len(sink.beats) < len(want):
        await RisingEdge(dut.clk)
    layout = packed_layout(config)
    got = [(int(b.row), bool(b.group_end), bool(b.last), bool(b.empty)) for b in map(layout.from_bits, sink.beats)]
    assert got == want, f"first difference at beat {next(n for n, (g, w) in enumerate(zip(got, want)) if g != w)}"
    dut._log.info(f"{count} blocks, {len(want)} beats packed bit-exact")


@cocotb.test()
async def row_packer_blocks(dut):
    """Masks back to back, no gaps or stalls."""
    await run_masks(dut, "row_packer_blocks", gap=0.0, stall=0.0)


@cocotb.test()
async def row_packer_gaps_and_back_pressure(dut):
    """Random gaps on the masks and back-pressure on the rows."""
    await run_masks(dut, "row_packer_gaps_and_back_pressure", gap=0.3, stall=0.4)
