"""Output-bitwidth-aware mixed-precision processing element (PE) of the systolic array.

Golden twin: :func:`sw.golden.pe_products` and :func:`sw.golden.pe_step`.

Datapath: one signed 8 x 8 multiplier built from two signed 8 x 5 sub-multipliers over the two nibbles of
the operand word ``b``. The mode (:class:`paro.config.PEMode`) arrives with each beat and is chosen by the
scheduler from the *output* block's planned bitwidth, not from the operand types:

* ``INT8``  — the nibble products combine into one 8 x 8 product: ``acc0 += a * b`` (1 product/cycle).
* ``INT4``  — ``acc0 += a * b.int4[0]``, ``acc1 += a * b.int4[1]`` (2 products/cycle, signed K).
* ``UINT4`` — ``acc0 += a * b.uint4[0]``, ``acc1 += a * b.uint4[1]`` (2 products/cycle, P >= 0).

A 2-bit mode (four 8 x 2 products) would split each nibble once more in the same way.

Cycle behaviour (every register advances only while ``en`` is high; ``en`` low freezes the PE):

* ``a``, ``b`` and ``ctl`` are registered to ``a_out``, ``b_out``, ``ctl_out`` with one cycle of latency,
  which is how operands move through the array (``a``/``ctl`` to the right, ``b`` down).
* On a beat with ``ctl.valid``: each accumulator becomes ``(0 if fresh else acc) + product``, wrapped to
  ``acc_width`` bits; ``fresh`` is set by the previous valid beat's ``ctl.last`` (and by reset), so tiles
  run back to back with no bubble and the mode may change between tiles at no cost.
* On a valid beat with ``ctl.last``: the final sums are copied into ``result`` (the shadow registers the
  array drains from) in the same cycle the accumulators restart; ``result`` is stable until the next tile
  ends.

Accumulator width: the config's ``acc_width``, at least :func:`paro.config.min_acc_width` of the longest
tile (``depth`` products of ``-128 x -128 = 2**14`` sum to ``depth * 2**14``, which needs
``log2(depth) + 16`` signed bits: 22 for depth 64). Longer tiles wrap in two's complement, as the golden model
does.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from paro.config import PEMode

from .component import ConfiguredComponent

__all__ = ["OperandB", "PEControl", "ProcessingElement"]


#: The 8-bit ``b`` operand word, read as one signed byte or as two packed nibbles.
OperandB = data.UnionLayout({
    "int8":  signed(8),
    "int4":  data.ArrayLayout(signed(4), 2),
    "uint4": data.ArrayLayout(unsigned(4), 2),
})

#: Control that travels with the ``a`` operand: one beat of a tile.
PEControl = data.StructLayout({
    "valid": 1,       # a real beat (0: a bubble, the PE holds)
    "last":  1,       # last beat of the tile: latch the sums into ``result``
    "mode":  PEMode,  # compute mode of this beat's tile
})


class ProcessingElement(ConfiguredComponent):
    """One PE. See the module docstring for the arithmetic and the cycle behaviour.

    Parameters
    ----------
    config : AcceleratorConfig
        Supplies ``acc_width`` and the supported modes (a config without 4-bit blocks builds an INT8-only
        PE, the baseline of the area comparison).
    """

    def __init__(self, config):
        acc = signed(config.acc_width)
        super().__init__(config, {
            "en":      In(1),
            "a":       In(signed(8)),
            "b":       In(OperandB),
            "ctl":     In(PEControl),
            "a_out":   Out(signed(8)),
            "b_out":   Out(OperandB),
            "ctl_out": Out(PEControl),
            "result":  Out(data.ArrayLayout(acc, 2)),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._config.acc_width
        mixed = PEMode.INT4 in self._config.modes

        acc = [Signal(signed(width), name=f"acc{k}") for k in range(2)]
        fresh = Signal(init=1)

        # Sub-multiplier operands: each nibble extended to a signed 5-bit value per mode.
        lo = Signal(signed(5))
        hi = Signal(signed(5))
        if mixed:
            m.d.comb += [
                lo.eq(Mux(self.ctl.mode == PEMode.INT4, self.b.int4[0], self.b.uint4[0])),
                hi.eq(Mux(self.ctl.mode == PEMode.UINT4, self.b.uint4[1], self.b.int4[1])),
            ]
        else:
            m.d.comb += [lo.eq(self.b.uint4[0]), hi.eq(self.b.int4[1])]

        prod_lo = Signal(signed(13))
        prod_hi = Signal(signed(13))
        m.d.comb += [prod_lo.eq(self.a * lo), prod_hi.eq(self.a * hi)]

        # Products into the two accumulators: INT8 combines the nibble products, the 4-bit modes don't.
        p = [Signal(signed(17), name=f"p{k}") for k in range(2)]
        if mixed:
            m.d.comb += [
                p[0].eq(Mux(self.ctl.mode == PEMode.INT8, (prod_hi << 4) + prod_lo, prod_lo)),
                p[1].eq(Mux(self.ctl.mode == PEMode.INT8, 0, prod_hi)),
            ]
        else:
            m.d.comb += [p[0].eq((prod_hi << 4) + prod_lo), p[1].eq(0)]

        total = [Signal(signed(width), name=f"total{k}") for k in range(2)]
        for k in range(2):
            m.d.comb += total[k].eq(Mux(fresh, 0, acc[k]) + p[k])

        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a),
                self.b_out.eq(self.b),
                self.ctl_out.eq(self.ctl),
            ]
            with m.If(self.ctl.valid):
                m.d.sync += [acc[k].eq(total[k]) for k in range(2)]
                m.d.sync += fresh.eq(self.ctl.last)
                with m.If(self.ctl.last):
                    m.d.sync += [self.result[k].eq(total[k]) for k in range(2)]
        return m
