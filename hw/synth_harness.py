"""FPGA synthesis harness: the array with its streams closed inside the chip, for resource and Fmax reports.

The array's ports are far wider than any board's pins, so for synthesis its inputs come from on-chip
pseudo-random sources and its outputs are folded into one LED:

* A 32-bit Galois LFSR produces one fresh bit per cycle; a serial-in parallel-out shift register spreads it
  over every input bit (``a``/``b`` payloads, valids, ``c.ready``): one flip-flop per input bit.
* The output (``c`` payload and valid) is registered, then every bit is XOR-folded into one register that
  drives the LED, so no output bit is constant and nothing is optimised away. The register keeps the fold's
  XOR tree out of the array's timing paths (the array's own paths end at it); the fold costs LUTs.

``harness_only=True`` builds the same harness around no array, to measure the harness's LUTs alone: the fold
takes the last ``c``-width bits of the shift register in place of the array's output (the register is made
long enough for that, so every bit stays live and the fold is as wide). The FPGA report subtracts those LUTs
from the whole design's, and the harness's flip-flops are counted (:func:`harness_flip_flops`).

Cycle behaviour is irrelevant here: the harness only exists to keep the logic alive and the clock constrained.
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import io, wiring

from .array import SystolicArray, a_layout, b_layout, c_layout
from .component import ConfiguredComponent

__all__ = ["SynthHarness", "harness_input_bits", "harness_flip_flops"]

LFSR_TAPS = 0x80200003   # x^32 + x^22 + x^2 + x + 1, maximal length


def harness_input_bits(config):
    """Flip-flops of the shift register over every array input bit and of the LFSR."""
    return a_layout(config).size + b_layout(config).size + 3 + 32


def harness_flip_flops(config):
    """Every flip-flop the harness adds to the array: the shift register, the LFSR, the output register and the
    fold register."""
    return harness_input_bits(config) + c_layout(config).size + 1 + 1


class SynthHarness(ConfiguredComponent):
    """The array plus stimulus and an output fold; one output, ``led``."""

    def __init__(self, config, harness_only=False):
        self._harness_only = harness_only
        super().__init__(config, {"led": wiring.Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], Const(0, 1)) ^ (LFSR_TAPS * lfsr[0]))

        width = c_layout(cfg).size
        stimulus = Signal(max(harness_input_bits(cfg) - 32, width + 1) if self._harness_only
                          else harness_input_bits(cfg) - 32)
        m.d.sync += stimulus.eq(Cat(lfsr[0], stimulus[:-1]))
        if self._harness_only:
            output, output_valid = stimulus[-width:], stimulus[-width - 1]
        else:
            m.submodules.array = array = SystolicArray(cfg)
            inputs = Cat(array.a.payload, array.b.payload, array.a.valid, array.b.valid, array.c.ready)
            m.d.comb += inputs.eq(stimulus)
            output, output_valid = array.c.payload.as_value(), array.c.valid

        registered = Signal(len(output) + 1)
        m.d.sync += registered.eq(Cat(output, output_valid))
        fold = Signal()
        m.d.sync += fold.eq(fold ^ registered.xor())
        m.d.comb += self.led.eq(fold)

        if platform is not None:
            m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
            m.d.comb += led.o.eq(self.led)
        return m
