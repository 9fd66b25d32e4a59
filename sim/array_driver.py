"""Shared cocotb driver for the systolic array (``hw/array.py``): packs tiles into beats, runs them through
the ``a``/``b``/``c`` streams with random stalls and compares the drained beats to ``sw.golden``.
"""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from paro.hw.array import a_layout, b_layout, c_layout
from paro.config import PEMode
from paro.sw.golden import array_drain_beats, array_tile, operand_range, pack_operand_b
from paro.sim.streams import StreamSink, StreamSource

__all__ = ["random_tile", "tile_beats", "ArrayHarness"]


def random_tile(rng, config, mode, depth):
    """Random ``(A, B, mode)`` of the given depth; a quarter of the values are the mode's extremes."""
    gen = np.random.default_rng(rng.getrandbits(32))
    cols = config.cols * PEMode(mode).products_per_cycle
    low, high = operand_range(mode)
    a = gen.integers(-128, 128, size=(config.rows, depth))
    b = gen.integers(low, high + 1, size=(cols, depth))
    a = np.where(gen.random(a.shape) < 0.25, gen.choice([-128, 127], size=a.shape), a)
    b = np.where(gen.random(b.shape) < 0.25, gen.choice([low, high], size=b.shape), b)
    return a, b, PEMode(mode)


def tile_beats(config, a, b, mode):
    """Packed ``a`` and ``b`` stream beats (ints) of one tile."""
    la, lb = a_layout(config), b_layout(config)
    depth = a.shape[1]
    words = pack_operand_b(b.T, mode)  # (depth, cols)
    a_beats = [la.const({"a": [int(x) for x in a[:, k]], "mode": mode, "last": k == depth - 1}).as_bits()
               for k in range(depth)]
    b_beats = [lb.const({"b": [{"int8": int(w) - 256 if w >= 128 else int(w)} for w in words[k]]}).as_bits()
               for k in range(depth)]
    return a_beats, b_beats


class ArrayHarness:
    """Sources on ``a`` and ``b`` and a sink on ``c`` with the given gap/stall probabilities."""

    def __init__(self, dut, config, rng, gap=0.0, stall=0.0, stamp=False):
        self.dut, self.config = dut, config
        self.src_a = StreamSource(dut, "a", rng, gap, stamp=stamp)
        self.src_b = StreamSource(dut, "b", rng, gap, stamp=stamp)
        self.sink = StreamSink(dut, "c", rng, stall, stamp=stamp)
        self.layout = c_layout(config)
        self.sink_task = None

    def start_sink(self):
        self.sink_task = cocotb.start_soon(self.sink.run())

    async def send(self, tiles):
        a_beats, b_beats = [], []
        for a, b, mode in tiles:
            ta, tb = tile_beats(self.config, a, b, mode)
            a_beats += ta
            b_beats += tb
        task_b = cocotb.start_soon(self.src_b.send(b_beats))
        await self.src_a.send(a_beats)
        await task_b

    async def wait_beats(self, count, timeout_cycles):
        for _ in range(timeout_cycles):
            if len(self.sink.beats) >= count:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"timeout: {len(self.sink.beats)} of {count} output beats after {timeout_cycles} cycles")

    def decoded(self):
        beats = [self.layout.from_bits(v) for v in self.sink.beats]
        return [([view.c[i] for i in range(self.config.rows)], view.last) for view in beats]

    def check(self, tiles, start=0):
        """Compare the drained beats from ``start`` on with the golden model of ``tiles``."""
        got = self.decoded()[start:]
        expected = []
        for a, b, mode in tiles:
            columns = array_drain_beats(array_tile(a, b, mode, self.config.acc_width))
            expected += [([int(x) for x in col], n == len(columns) - 1) for n, col in enumerate(columns)]
        assert len(got) == len(expected), f"{len(got)} beats drained, expected {len(expected)}"
        for n, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"beat {n}: got {g}, golden {e}"
        return len(expected)
