"""The word multiplexer of hw/word_mux.py against Amaranth's word_select at every index its signal can carry,
past the word count too (both give 0 there), and its emitted Verilog: no shift left for a wide value."""

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.sim import Simulator

from paro.hw.word_mux import word_mux

SEED = 20261130


@pytest.mark.parametrize("bits,width,index_bits", [(352, 32, 4), (512, 128, 2), (96, 32, 3), (48, 8, 3), (512, 64, 2)],
                         ids=["11-words-by-4", "4-words-by-2", "3-words-by-3", "narrow-6-by-3", "8-words-by-2"])
def test_word_mux_is_word_select(bits, width, index_bits):
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    value, index = Signal(bits), Signal(index_bits)
    out, want, constant = Signal(width), Signal(width), Signal(width)
    m = Module()
    m.d.comb += [out.eq(word_mux(value, index, width)), want.eq(value.word_select(index, width)),
                 constant.eq(word_mux(value, 1, width))]

    async def testbench(ctx):
        for _ in range(8):
            v = int.from_bytes(rng.bytes(bits // 8), "little")
            ctx.set(value, v)
            assert ctx.get(constant) == (v >> width) & ((1 << width) - 1)
            for i in range(1 << index_bits):
                ctx.set(index, i)
                expected = (v >> (i * width)) & ((1 << width) - 1) if i < bits // width else 0
                assert ctx.get(out) == ctx.get(want) == expected, (hex(v), i)

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()


def test_wide_values_are_muxes_not_shifts():
    value, index = Signal(512, name="value"), Signal(4, name="index")
    m = Module()
    wide, narrow = Signal(32, name="wide"), Signal(8, name="narrow")
    m.d.comb += [wide.eq(word_mux(value, index, 32)), narrow.eq(word_mux(value[:64], index[:3], 8))]
    text = verilog.convert(m, ports=[value, index, wide, narrow])
    assert "value >>" not in text and "index[1] ?" in text      # 32-bit words: chunks of 2 by index[3:1]
    assert "value[63:0] >>" in text                      # 64 bits or fewer: one machine word, kept a shift


def test_word_mux_refuses_a_width_that_does_not_divide():
    with pytest.raises(ValueError, match="dividing the value's 40 bits"):
        word_mux(Signal(40), Signal(2), 16)
