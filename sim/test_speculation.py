"""cocotb bench of SimPicker's speculation unit (``hw/speculation.py``) against ``sw.golden``'s
``speculation_masses`` and ``speculation_classes``: random rows (ties, blocks a plan drops, partial and empty
blocks), thresholds from the whole range, random gaps on ``i`` and back-pressure on ``o``; every class and
``last`` compared, in order."""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from paro.hw.speculation import block_layout, class_layout
from paro.sim.streams import StreamSink, StreamSource, bench_config, bench_rng, reset, start_clock
from paro.sw.golden import SPEC_FRAC_BITS, speculation_classes, speculation_masses


def make_row(rng, config):
    n = rng.randint(1, config.max_blocks)
    spread = rng.choice([4, 64, 4096, 1 << 14])
    offset = rng.randint(-10**6, 10**6)
    x = [rng.randint(-spread, spread) * rng.choice([1, 7]) + offset for _ in range(n)]
    allowed = [rng.random() < 0.8 for _ in range(n)]
    keys = [config.block_size] * (n - 1) + [rng.randint(0, config.block_size)]
    one = 1 << SPEC_FRAC_BITS
    negligible = rng.randint(0, one // 4)
    return x, allowed, keys, rng.randint(negligible + 1, one), negligible


async def run_rows(dut, name, gap, stall, rows=30):
    config = bench_config()
    rng = bench_rng(name)
    blocks, classes = block_layout(config), class_layout()
    await start_clock(dut)
    await reset(dut)
    sink = StreamSink(dut, "o", rng, stall=stall)
    cocotb.start_soon(sink.run())
    for row in range(rows):
        x, allowed, keys, important, negligible = make_row(rng, config)
        dut.important.value = important
        dut.negligible.value = negligible
        masses = speculation_masses(np.array([x]), np.array(keys), config, np.array([allowed]))
        want = speculation_classes(masses, important, negligible)[0].tolist()
        beats = [blocks.const({"x": x[n], "allowed": allowed[n], "keys": keys[n], "last": n == len(x) - 1}).as_bits()
                 for n in range(len(x))]
        await StreamSource(dut, "i", rng, gap=gap).send(beats)
        while len(sink.beats) < len(x):
            await RisingEdge(dut.clk)
        got = [classes.from_bits(bits) for bits in sink.beats]
        sink.beats.clear()
        assert [int(b.cls) for b in got] == want, f"row {row}: got {[int(b.cls) for b in got]}, golden {want}"
        assert [bool(b.last) for b in got] == [n == len(x) - 1 for n in range(len(x))]
    dut._log.info(f"{rows} rows classed bit-exact")


@cocotb.test()
async def speculation_rows(dut):
    """Rows back to back, no gaps or stalls."""
    await run_rows(dut, "speculation_rows", gap=0.0, stall=0.0)


@cocotb.test()
async def speculation_gaps_and_back_pressure(dut):
    """Random gaps on the input and back-pressure on the classes."""
    await run_rows(dut, "speculation_gaps_and_back_pressure", gap=0.3, stall=0.4)
