"""FPGA synthesis harness: a design (the array or the whole engine) with its ports closed inside the chip, for
resource and Fmax reports.

The design's ports are far wider than any board's pins, so for synthesis its inputs come from on-chip
pseudo-random sources and its outputs are folded into one LED:

* A 32-bit Galois LFSR produces one fresh bit per cycle; a serial-in parallel-out shift register spreads it
  over every input bit of the design (every ``In`` member of its signature: for the array the ``a``/``b``
  payloads, valids and ``c.ready``; for the engine the AXI4 master's and the AXI4-Lite slave's inputs): one
  flip-flop per input bit.
* Every output bit (every ``Out`` member) is registered, then XOR-folded into one register that drives the
  LED, so no output bit is constant and nothing is optimised away. The register keeps the fold's XOR tree out
  of the design's timing paths (the design's own paths end at it); the fold costs LUTs.

``harness_only=True`` builds the same harness around no design, to measure the harness's LUTs alone: the fold
takes the last output-width bits of the shift register in place of the design's outputs (the register is made
long enough for that, so every bit stays live and the fold is as wide). The FPGA report subtracts those LUTs
from the whole design's, and the harness's flip-flops are counted (:func:`harness_flip_flops`).

Cycle behaviour is irrelevant here: the harness only exists to keep the logic alive and the clock constrained.
(For the engine the random AXI inputs never make a meaningful run; synthesis keeps every path regardless.)
"""

from amaranth import Cat, Const, Module, Shape, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from paro.errors import ParoError

from .array import SystolicArray, array_signature
from .component import ConfiguredComponent
from .engine import AttentionEngine, engine_signature

__all__ = ["SynthHarness", "HARNESS_TOPS", "harness_input_bits", "harness_flip_flops"]

LFSR_TAPS = 0x80200003   # x^32 + x^22 + x^2 + x + 1, maximal length


#: Designs the harness can hold: name -> (component class, its signature from the config).
HARNESS_TOPS = {"array": (SystolicArray, array_signature), "engine": (AttentionEngine, engine_signature)}


def _ports(design):
    """``(inputs, outputs)``: the design's port values by flow, in signature order."""
    inputs, outputs = [], []
    for _, member, value in design.signature.flatten(design):
        (inputs if member.flow == In else outputs).append(Value.cast(value))
    return inputs, outputs


def _widths(signature):
    """``(input bits, output bits)`` of a signature's port members, by their flow."""
    bits = {In: 0, Out: 0}
    for _, member in signature.members.flatten():
        if member.is_port:
            bits[member.flow] += Shape.cast(member.shape).width
    return bits[In], bits[Out]


def harness_input_bits(config, top="array"):
    """Flip-flops of the shift register over every input bit of the design, and of the LFSR."""
    return _widths(HARNESS_TOPS[top][1](config))[0] + 32


def harness_flip_flops(config, top="array"):
    """Every flip-flop the harness adds to the design: the shift register, the LFSR, the output register and
    the fold register."""
    inputs, outputs = _widths(HARNESS_TOPS[top][1](config))
    return inputs + 32 + outputs + 1


class SynthHarness(ConfiguredComponent):
    """The design ``top`` (a name of :data:`HARNESS_TOPS`) plus stimulus and an output fold; one output, ``led``."""

    @classmethod
    def check(cls, config, top="array", harness_only=False):
        if top not in HARNESS_TOPS:
            raise ParoError(f"unknown synthesis top {top!r}; choose one of {', '.join(HARNESS_TOPS)}")

    def __init__(self, config, top="array", harness_only=False):
        self._top, self._harness_only = top, harness_only
        super().__init__(config, {"led": wiring.Out(1)})

    @property
    def top(self):
        """The design the harness holds: a name of :data:`HARNESS_TOPS`."""
        return self._top

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], Const(0, 1)) ^ (LFSR_TAPS * lfsr[0]))

        input_bits, output_bits = _widths(HARNESS_TOPS[self._top][1](cfg))
        stimulus = Signal(max(input_bits, output_bits) if self._harness_only else input_bits)
        m.d.sync += stimulus.eq(Cat(lfsr[0], stimulus[:-1]))
        if self._harness_only:
            output = stimulus[-output_bits:]
        else:
            m.submodules[self._top] = design = HARNESS_TOPS[self._top][0](cfg)
            inputs, outputs = _ports(design)
            m.d.comb += Cat(*inputs).eq(stimulus)
            output = Cat(*outputs)

        registered = Signal(len(output))
        m.d.sync += registered.eq(output)
        fold = Signal()
        m.d.sync += fold.eq(fold ^ registered.xor())
        m.d.comb += self.led.eq(fold)

        if platform is not None:
            m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
            m.d.comb += led.o.eq(self.led)
        return m
