"""Output-bitwidth-aware mixed-precision processing element (PE) of the systolic array.

Golden twin: :func:`sw.golden.pe_products` and :func:`sw.golden.pe_step`.

Datapath: one signed 8 x 8 multiplier built from sub-multipliers over slices of the operand word ``b``. The
mode (:class:`paro.config.PEMode`) arrives with each beat and is chosen by the scheduler from the *output*
block's planned bitwidth, not from the operand types:

* ``INT8``  — the sub-products combine into one 8 x 8 product: ``acc0 += a * b`` (1 product/cycle).
* ``INT4``  — ``acc0 += a * b.int4[0]``, ``acc1 += a * b.int4[1]`` (2 products/cycle, signed K); with the
  leading-zero cut (``k4_cut``) ``acc_k += (a * b.int4[k]) << b_exp[k]`` (the nibble's exponent, 0..5).
* ``UINT4`` — ``acc0 += a * b.uint4[0]``, ``acc1 += a * b.uint4[1]`` (2 products/cycle, P >= 0).
* ``INT2``  — ``acc_k += a * b.int2[k]`` for k in 0..3 (4 products/cycle, signed K); with the leading-zero
  cut of 2-bit K (``k2_cut``) ``acc_k += (a * b.int2[k]) << b_exp[k]`` (the crumb's exponent, 0..7).
* ``UINT2`` — ``acc_k += a * b.uint2[k]`` for k in 0..3 (4 products/cycle, P >= 0).

An INT8-only config builds one plain signed 8 x 8 multiplier and one accumulator (the baseline of the area
comparison). With 4-bit but without 2-bit blocks there are two signed 8 x 5 sub-multipliers, one per nibble
of ``b`` (zero- or sign-extended by mode), and two accumulators. With 2-bit blocks each nibble's sub-multiplier is
split once more into two signed 8 x 3 sub-multipliers, one per 2-bit slice ("crumb") of ``b``, and there are
four accumulators: a crumb is sign-extended where it is the top of a signed value (crumb 3 in INT8, crumbs 1
and 3 in INT4, every crumb in INT2) and zero-extended otherwise; a nibble's product is
``(crumb_hi << 2) + crumb_lo`` and the 8 x 8 product ``(nibble_hi << 4) + nibble_lo``. The same adders serve
every mode, which only selects what each accumulator adds.

Cycle behaviour (every register advances only while ``en`` is high; ``en`` low freezes the PE):

* ``a``, ``b`` and ``ctl`` are registered to ``a_out``, ``b_out``, ``ctl_out`` with one cycle of latency,
  which is how operands move through the array (``a``/``ctl`` to the right, ``b`` down).
* On a beat with ``ctl.valid``: each accumulator becomes ``(0 if fresh else acc) + product``, wrapped to
  ``acc_width`` bits; ``fresh`` is set by the previous valid beat's ``ctl.last`` (and by reset), so tiles
  run back to back with no bubble and the mode may change between tiles at no cost.
* On a valid beat with ``ctl.last``: the final sums are copied into ``result`` (the shadow registers the
  array drains from) in the same cycle the accumulators restart; ``result`` is stable until the next tile
  ends.
* ``pe_stages`` (config) pipeline registers, for Fmax: 1 registers the sub-products after the multipliers, 2
  also the multipliers' operands (``a`` and ``b``'s fields, sign- or zero-extended by the mode) before them;
  the beat's mode, valid and last travel with them. A beat then reaches the accumulators (and a tile's sums
  ``result``) ``pe_stages`` enabled cycles after it entered; ``a_out``, ``b_out`` and ``ctl_out`` keep their
  one cycle, so the array's dataflow is unchanged.

Accumulator width: the config's ``acc_width``, at least :func:`paro.config.min_acc_width` of the longest
tile (``depth`` products of ``-128 x -128 = 2**14`` sum to ``depth * 2**14``, which needs
``log2(depth) + 16`` signed bits: 22 for depth 64). Longer tiles wrap in two's complement, as the golden model
does.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Assert, Assume
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from paro.config import K_EXP_BITS, PEMode
from paro.sw.golden import lz_max_exponent

from .component import ConfiguredComponent

__all__ = ["OperandB", "operand_exponents", "PEControl", "ProcessingElement", "formal_properties"]


#: The 8-bit ``b`` operand word, read as one signed byte, two packed nibbles or four packed crumbs.
OperandB = data.UnionLayout({
    "int8": signed(8), "int4": data.ArrayLayout(signed(4), 2), "uint4": data.ArrayLayout(unsigned(4), 2),
    "int2": data.ArrayLayout(signed(2), 4), "uint2": data.ArrayLayout(unsigned(2), 4)})


def operand_exponents(config):
    """The ``config.k_exponents`` exponents beside ``b`` with a leading-zero cut: of its INT4 nibbles (``k4_cut``,
    0..5) and INT2 crumbs (``k2_cut``, 0..7), which shift their products left (``|field << exp| <= 128``)."""
    return data.ArrayLayout(unsigned(K_EXP_BITS), config.k_exponents)


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
        Supplies ``acc_width`` and the supported modes (a config without 4-bit or 2-bit blocks builds an
        INT8-only PE, the baseline of the area comparison); ``pe_accumulators`` results.
    """

    def __init__(self, config):
        acc = signed(config.acc_width)
        ports = {"en": In(1), "a": In(signed(8)), "b": In(OperandB), "ctl": In(PEControl),
                 "a_out": Out(signed(8)), "b_out": Out(OperandB), "ctl_out": Out(PEControl),
                 "result": Out(data.ArrayLayout(acc, config.pe_accumulators))}
        if config.k_exponents:
            # the exponents of the INT4 nibbles / INT2 crumbs (the leading-zero cuts), moving down with ``b``
            ports.update({"b_exp": In(operand_exponents(config)), "b_exp_out": Out(operand_exponents(config))})
        super().__init__(config, ports)
        # State, named here so that the formal properties (below) can state what it holds.
        self.acc = [Signal(acc, name=f"acc{k}") for k in range(config.pe_accumulators)]
        self.fresh = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        width, lanes, stages = self._config.acc_width, self._config.pe_accumulators, self._config.pe_stages
        acc, fresh = self.acc, self.fresh
        if PEMode.INT2 in self._config.modes:
            operands, combine = self._crumb_operands, self._combine_crumbs
        elif PEMode.INT4 in self._config.modes:
            operands, combine = self._nibble_operands, self._combine_nibbles
        else:
            operands, combine = (lambda m: [self.b.int8]), (lambda m, raw, mode: raw)

        # The beat's b operands (sign-extended by its mode), then (pe_stages == 2) a register, the multipliers,
        # then (pe_stages >= 1) a register, the combined products; the beat's a, mode, valid and last travel
        # with them.
        ops, a, mode, valid, last = operands(m), self.a, self.ctl.mode, self.ctl.valid, self.ctl.last
        exps = list(self.b_exp) if self._config.k_exponents else []
        if stages >= 2:
            staged, mode, valid, last = self._stage(m, "operands", [a, *ops, *exps], mode, valid, last)
            a, ops, exps = staged[0], staged[1:1 + len(ops)], staged[1 + len(ops):]
        raw = []
        for k, op in enumerate(ops):
            product = Signal(signed(8 + len(op)), name=f"prod{k}")
            m.d.comb += product.eq(a * op)
            raw.append(product)
        if stages >= 1:
            staged, mode, valid, last = self._stage(m, "products", raw + exps, mode, valid, last)
            raw, exps = staged[:len(raw)], staged[len(raw):]
        products = combine(m, raw, mode)
        if exps:                                        # the leading-zero cuts: INT4 / INT2 products shifted
            products = self._shifted(m, products, exps, mode)

        total = [Signal(signed(width), name=f"total{k}") for k in range(lanes)]
        m.d.comb += [total[k].eq(Mux(fresh, 0, acc[k]) + products[k]) for k in range(lanes)]

        with m.If(self.en):
            m.d.sync += [self.a_out.eq(self.a), self.b_out.eq(self.b), self.ctl_out.eq(self.ctl)]
            if exps:
                m.d.sync += self.b_exp_out.eq(self.b_exp)
            with m.If(valid):
                m.d.sync += [acc[k].eq(total[k]) for k in range(lanes)]
                m.d.sync += fresh.eq(last)
                with m.If(last):
                    m.d.sync += [self.result[k].eq(total[k]) for k in range(lanes)]
        return m

    def _stage(self, m, name, values, mode, valid, last):
        """A pipeline register (advancing with ``en``) of ``values``, the mode and the beat's valid and last."""
        out = [Signal(value.shape(), name=f"{name}{k}") for k, value in enumerate(values)]
        regs = Signal(PEMode, name=f"{name}_mode"), Signal(name=f"{name}_valid"), Signal(name=f"{name}_last")
        with m.If(self.en):
            m.d.sync += [o.eq(v) for o, v in zip(out, values)]
            m.d.sync += [regs[0].eq(mode), regs[1].eq(valid), regs[2].eq(last)]
        return (out, *regs)

    def _shifted(self, m, products, exps, mode):
        """The products of the modes whose K is cut at the leading zero, shifted by their exponents: INT4
        (``k4_cut``) on accumulators 0 and 1, INT2 (``k2_cut``) on all four."""
        cfg, shifted = self._config, []
        lanes = {PEMode.INT4: 2, PEMode.INT2: 4}                    # the products each cut mode shifts
        top = max(lz_max_exponent(cut_mode.bits) for cut_mode in lanes if cfg.leading_zero(cut_mode.bits))
        for k, product in enumerate(products):
            cut = [mode == cut_mode for cut_mode, n in lanes.items() if cfg.leading_zero(cut_mode.bits) and k < n]
            if cut:
                out = Signal(signed(len(product) + top), name=f"shifted{k}")
                m.d.comb += out.eq(Mux(cut[0] if len(cut) == 1 else cut[0] | cut[1], product << exps[k], product))
                product = out
            shifted.append(product)
        return shifted

    def _nibble_operands(self, m):
        """The two nibbles of ``b`` as signed 5-bit operands (sign- or zero-extended by the beat's mode)."""
        mode = self.ctl.mode
        lo, hi = Signal(signed(5), name="lo"), Signal(signed(5), name="hi")
        m.d.comb += [lo.eq(Mux(mode == PEMode.INT4, self.b.int4[0], self.b.uint4[0])),
                     hi.eq(Mux(mode == PEMode.UINT4, self.b.uint4[1], self.b.int4[1]))]
        return [lo, hi]

    def _combine_nibbles(self, m, raw, mode):
        """The products of accumulators 0 and 1 from the nibble products."""
        prod_lo, prod_hi = raw
        p = [Signal(signed(17), name=f"p{k}") for k in range(2)]
        m.d.comb += [
            p[0].eq(Mux(mode == PEMode.INT8, (prod_hi << 4) + prod_lo, prod_lo)),
            p[1].eq(Mux(mode == PEMode.INT8, 0, prod_hi)),
        ]
        return p

    def _crumb_operands(self, m):
        """The four crumbs of ``b`` as signed 3-bit operands (sign- or zero-extended by the beat's mode)."""
        mode = self.ctl.mode
        top_signed = [mode == PEMode.INT2, (mode == PEMode.INT4) | (mode == PEMode.INT2), mode == PEMode.INT2,
                      (mode != PEMode.UINT4) & (mode != PEMode.UINT2)]
        crumbs = []
        for k in range(4):
            ext = Signal(signed(3), name=f"crumb{k}")
            m.d.comb += ext.eq(Mux(top_signed[k], self.b.int2[k], self.b.uint2[k]))
            crumbs.append(ext)
        return crumbs

    def _combine_crumbs(self, m, crumb, mode):
        """The products of accumulators 0..3 from the crumb products."""
        two_bit = (mode == PEMode.INT2) | (mode == PEMode.UINT2)
        four_bit = (mode == PEMode.INT4) | (mode == PEMode.UINT4)
        nibble = [Signal(signed(13), name=f"nibble{k}") for k in range(2)]
        m.d.comb += [nibble[k].eq((crumb[2 * k + 1] << 2) + crumb[2 * k]) for k in range(2)]
        p = [Signal(signed(17), name=f"p{k}") for k in range(4)]
        m.d.comb += [
            p[0].eq(Mux(two_bit, crumb[0], Mux(four_bit, nibble[0], (nibble[1] << 4) + nibble[0]))),
            p[1].eq(Mux(two_bit, crumb[1], Mux(four_bit, nibble[1], 0))),
            p[2].eq(Mux(two_bit, crumb[2], 0)),
            p[3].eq(Mux(two_bit, crumb[3], 0)),
        ]
        return p


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction) against a plain statement of each mode (``a`` times the mode's
    field of ``b``: ``int8``, ``int4[k]``, ``uint4[k]``, ``int2[k]``, ``uint2[k]``), summed exactly (4 bits
    wider than the accumulator) since the tile's first beat: every accumulator equals that sum wrapped to
    ``acc_width`` (two's complement, as :func:`sw.golden.pe_step`), for tiles of any length (with the
    leading-zero cuts an INT4 or INT2 field is ``field << exponent``, assumed within +-128); within the
    configuration's depth (``max(head_dim, block_size)`` beats) the sum fits ``acc_width``, so nothing
    overflows; ``result`` holds the last finished tile's sums. Assumed: ``mode`` is one of the PE's modes."""
    cfg = dut.config
    width, depth, lanes = cfg.acc_width, cfg.depth, cfg.pe_accumulators
    m.d.comb += Assume(sum((dut.ctl.mode == mode) for mode in cfg.modes) == 1)
    fields = {PEMode.INT8: [dut.b.int8], PEMode.INT4: list(dut.b.int4), PEMode.UINT4: list(dut.b.uint4),
              PEMode.INT2: list(dut.b.int2), PEMode.UINT2: list(dut.b.uint2)}
    for mode in (PEMode.INT4, PEMode.INT2):
        if cfg.leading_zero(mode.bits):
            # values are field << exponent, what the K reduction makes: |value| <= 128 (assumed)
            values = [Signal(signed(9), name=f"spec_{mode.name.lower()}_{k}") for k in range(len(fields[mode]))]
            for k, value in enumerate(values):
                m.d.comb += [value.eq(fields[mode][k] << dut.b_exp[k]),
                             Assume((value <= 128) & (value >= -128) & (dut.b_exp[k] <= lz_max_exponent(mode.bits)))]
            fields[mode] = values
    exact = [Signal(signed(width + 4), name=f"exact{k}") for k in range(lanes)]
    beats, fresh = Signal(range(depth + 2)), Signal(init=1)         # beats of the tile so far (depth + 1: beyond)
    with m.If(dut.en & dut.ctl.valid):
        m.d.sync += [fresh.eq(dut.ctl.last), beats.eq(Mux(fresh, 1, Mux(beats > depth, beats, beats + 1)))]
        for k in range(lanes):
            product = Signal(signed(17), name=f"spec_product{k}")
            with m.Switch(dut.ctl.mode):
                for mode in cfg.modes:
                    with m.Case(mode):
                        m.d.comb += product.eq(dut.a * fields[mode][k] if k < len(fields[mode]) else 0)
            m.d.sync += exact[k].eq(Mux(fresh, 0, exact[k]) + product)
    bound = beats * (1 << 14)                                      # |a * b| <= 128 * 128 per beat
    m.d.comb += Assert(dut.fresh == fresh, "fresh follows the tiles")
    for k in range(lanes):
        m.d.comb += Assert(dut.acc[k] == exact[k][:width].as_signed(), f"acc{k}: the exact sum, wrapped to acc_width")
        with m.If(~fresh & (beats <= depth)):
            m.d.comb += [Assert((exact[k] <= bound) & (exact[k] >= -bound), f"acc{k}: |sum| <= beats * 2**14"),
                         Assert((exact[k] < (1 << (width - 1))) & (exact[k] >= -(1 << (width - 1))),
                                f"acc{k}: no overflow within the depth")]
        with m.If(fresh):
            m.d.comb += Assert(dut.result[k] == dut.acc[k], f"result{k}: the finished tile's sums")
