"""FPGA synthesis harness: the array with its streams closed inside the chip, for resource and Fmax reports.

The array's ports are far wider than any board's pins, so for synthesis its inputs come from on-chip
pseudo-random sources and its outputs are folded into one LED:

* A 32-bit Galois LFSR produces one fresh bit per cycle; a serial-in parallel-out shift register spreads it
  over every input bit (``a``/``b`` payloads, valids, ``c.ready``). That costs one flip-flop per input bit and
  no LUTs, so the LUT count is the array's own.
* Every output payload bit is XOR-folded (with ``c.valid``) into one register that drives the LED, so no
  output bit is constant and nothing is optimised away.

Cycle behaviour is irrelevant here: the harness only exists to keep the logic alive and the clock constrained.
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import io, wiring

from .array import SystolicArray, a_layout, b_layout
from .component import ConfiguredComponent

__all__ = ["SynthHarness", "harness_input_bits"]

LFSR_TAPS = 0x80200003   # x^32 + x^22 + x^2 + x + 1, maximal length


def harness_input_bits(config):
    """Flip-flops the harness adds: the shift register over every array input bit, and the LFSR."""
    return a_layout(config).size + b_layout(config).size + 3 + 32


class SynthHarness(ConfiguredComponent):
    """The array plus stimulus and an output fold; one output, ``led``."""

    def __init__(self, config):
        super().__init__(config, {"led": wiring.Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = SystolicArray(self._config)

        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], Const(0, 1)) ^ (LFSR_TAPS * lfsr[0]))

        inputs = Cat(array.a.payload, array.b.payload, array.a.valid, array.b.valid, array.c.ready)
        stimulus = Signal(len(inputs))
        m.d.sync += stimulus.eq(Cat(lfsr[0], stimulus[:-1]))
        m.d.comb += inputs.eq(stimulus)

        fold = Signal()
        m.d.sync += fold.eq(fold ^ array.c.payload.as_value().xor() ^ array.c.valid)
        m.d.comb += self.led.eq(fold)

        if platform is not None:
            m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
            m.d.comb += led.o.eq(self.led)
        return m
