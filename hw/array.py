"""Output-stationary R x C systolic array of mixed-precision PEs computing one tile ``C = A @ B^T``.

Golden twin: :func:`sw.golden.array_tile` (values) and :func:`sw.golden.array_drain_beats` (order).

Both uses of attention map onto the same tile product:

* ``S = Q K^T``: ``A = Q`` (R queries x d), ``B = K`` (C keys in INT8, 2C keys packed in INT4, 4C in INT2).
* ``O^T = V^T P^T``: ``A = V^T`` (R head-dim rows x block keys), ``B = P`` (C queries in INT8, 2C queries
  packed as UINT4, 4C as UINT2), so the 8-bit operand is always ``A`` and the operand whose precision follows
  the output block's bitwidth is always ``B``.

Dataflow: output-stationary. Each PE owns one (two in the 4-bit modes, four in the 2-bit modes) output
elements, ``A`` rows flow right and ``B`` columns flow down; the depth K of the tile is the number of beats.
Output-stationary is chosen because the accumulators never move during a tile (no partial-sum traffic) and a
tile of depth K keeps every PE busy for K cycles; the results leave through shadow registers, so draining tile
n overlaps computing tile n+1.

Streams (all ``lib.stream``, valid/ready):

* ``a``: one beat per k: column ``A[:, k]`` (R signed bytes), the tile's ``mode`` and ``last`` (the tile's
  final k). ``b``: one beat per k: ``B`` column k packed as C operand words (``sw.golden.pack_operand_b``).
  The two inputs are joined: a beat is taken when both are valid.
* ``c``: one beat per output column ``n`` of the tile (C beats in INT8, 2C in the 4-bit, 4C in the 2-bit
  modes): the R accumulator values of ``C[:, n]``; ``last`` marks the tile's final beat.

Cycle behaviour:

* Input skew: row i of ``A`` (with its control) is delayed i cycles and column j of ``B`` j cycles, so
  ``A[i, k]`` meets ``B[j, k]`` in PE (i, j) at cycle ``t_k + i + j``. A cycle in which the inputs do not
  deliver a beat injects a bubble (``valid = 0``) that travels with the data: input gaps cost exactly their
  own length and nothing is lost or duplicated.
* A tile's last beat reaches PE (R-1, C-1) ``R + C - 2`` cycles after it entered; ``1 + pe_stages`` cycles
  later the drain starts emitting beats on ``c``, one per cycle while ``c.ready`` (``pe_stages``: the PE's
  pipeline registers between multipliers and accumulators).
* Throughput: tiles of depth K enter back to back at one beat per cycle (mode changes between tiles cost
  nothing). At most one tile may be finished-but-undrained: the *last* beat of the next tile is held at the
  input (``ready`` low) until the previous tile's drain has ended, which is what keeps every PE's shadow
  registers from being overwritten before they are read. Everything else keeps moving, so nothing deadlocks.
  With ``K >= R + C - 1 + pe_stages + beats`` and a ready consumer that never happens, so steady-state
  utilization is 100%; a single tile costs ``K + (R + C - 1) + pe_stages + beats`` cycles from first input to
  last output.
"""

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.hdl import Assert
from amaranth.utils import exact_log2
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from paro.config import PEMode

from .component import ConfiguredComponent
from .formal import past, stream_held
from .pe import OperandB, PEControl, ProcessingElement, operand_exponents

__all__ = ["SystolicArray", "array_signature", "a_layout", "b_layout", "c_layout", "formal_properties",
           "formal_tiles"]


def a_layout(config):
    return data.StructLayout({
        "a":    data.ArrayLayout(signed(8), config.rows),
        "mode": PEMode,
        "last": 1,
    })


def b_layout(config):
    fields = {"b": data.ArrayLayout(OperandB, config.cols)}
    if config.k_exponents:                     # each column's nibble / crumb exponents (the leading-zero cuts)
        fields["exp"] = data.ArrayLayout(operand_exponents(config), config.cols)
    return data.StructLayout(fields)


def c_layout(config):
    return data.StructLayout({
        "c":    data.ArrayLayout(signed(config.acc_width), config.rows),
        "last": 1,
    })


def array_signature(config):
    """The array's ports: the ``a`` and ``b`` operand streams in, the ``c`` result stream out."""
    return wiring.Signature({
        "a": In(stream.Signature(a_layout(config))),
        "b": In(stream.Signature(b_layout(config))),
        "c": Out(stream.Signature(c_layout(config))),
    })


class SystolicArray(ConfiguredComponent):
    """R x C output-stationary systolic array; see the module docstring for streams and timing. With the
    leading-zero cuts (``k4_cut``, ``k2_cut``) the ``b`` stream also carries each column's nibble or crumb
    exponents, which move down the column with ``b``.

    Parameters
    ----------
    config : AcceleratorConfig
        ``rows`` x ``cols`` PEs with ``acc_width`` accumulators.
    """

    def __init__(self, config):
        super().__init__(config, array_signature(config))
        self.pes = [[ProcessingElement(config) for _ in range(config.cols)] for _ in range(config.rows)]

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._config.rows, self._config.cols

        # At most one tile is "in flight" (its last beat taken, its drain not finished): the last beat of
        # the next tile waits at the input until the drain ends, so no PE ever overwrites shadow registers
        # that still hold undrained sums. Everything else keeps moving, so this cannot deadlock.
        in_flight = Signal()
        accept = Signal()
        take = Signal()
        m.d.comb += [
            accept.eq(~(in_flight & self.a.payload.last)),
            take.eq(accept & self.a.valid & self.b.valid),
            self.a.ready.eq(accept & self.b.valid),
            self.b.ready.eq(accept & self.a.valid),
        ]

        pes = self.pes
        for i in range(rows):
            for j in range(cols):
                m.submodules[f"pe_{i}_{j}"] = pes[i][j]
                m.d.comb += pes[i][j].en.eq(1)     # the array never freezes; back-pressure acts at its input

        # Edge feeds: the beat taken this cycle (or a bubble), then skewed by i (rows) or j (columns).
        ctl_in = Signal(PEControl)
        m.d.comb += [
            ctl_in.valid.eq(take),
            ctl_in.last.eq(self.a.payload.last),
            ctl_in.mode.eq(self.a.payload.mode),
        ]
        for i in range(rows):
            a_feed, ctl_feed = self.a.payload.a[i], ctl_in
            for stage in range(i):
                a_reg = Signal(signed(8), name=f"skew_a_{i}_{stage}")
                ctl_reg = Signal(PEControl, name=f"skew_ctl_{i}_{stage}")
                m.d.sync += [a_reg.eq(a_feed), ctl_reg.eq(ctl_feed)]
                a_feed, ctl_feed = a_reg, ctl_reg
            m.d.comb += [pes[i][0].a.eq(a_feed), pes[i][0].ctl.eq(ctl_feed)]
            for j in range(1, cols):
                m.d.comb += [pes[i][j].a.eq(pes[i][j - 1].a_out), pes[i][j].ctl.eq(pes[i][j - 1].ctl_out)]
        lz = bool(self._config.k_exponents)
        for j in range(cols):
            b_feed = self.b.payload.b[j]
            exp_feed = self.b.payload.exp[j] if lz else None
            for stage in range(j):
                b_reg = Signal(OperandB, name=f"skew_b_{j}_{stage}")
                m.d.sync += b_reg.eq(b_feed)
                b_feed = b_reg
                if lz:
                    exp_reg = Signal(operand_exponents(self._config), name=f"skew_exp_{j}_{stage}")
                    m.d.sync += exp_reg.eq(exp_feed)
                    exp_feed = exp_reg
            m.d.comb += pes[0][j].b.eq(b_feed)
            for i in range(1, rows):
                m.d.comb += pes[i][j].b.eq(pes[i - 1][j].b_out)
            if lz:
                m.d.comb += pes[0][j].b_exp.eq(exp_feed)
                m.d.comb += [pes[i][j].b_exp.eq(pes[i - 1][j].b_exp_out) for i in range(1, rows)]

        # Drain: after the corner PE (the last to finish) latched its sums, emit one column per beat.
        corner = pes[rows - 1][cols - 1]
        lanes = self._config.pe_accumulators
        draining = Signal()
        drain_mode = Signal(PEMode)
        beat = Signal(range(lanes * cols))
        last_beat = Signal()
        with m.If(take & self.a.payload.last):
            m.d.sync += in_flight.eq(1)
        # The corner's last beat enters it now; its sums reach ``result`` pe_stages cycles later.
        finished, finished_mode = corner.ctl.valid & corner.ctl.last, corner.ctl.mode
        for stage in range(self._config.pe_stages):
            delayed, delayed_mode = Signal(name=f"finished_{stage}"), Signal(PEMode, name=f"finished_mode_{stage}")
            m.d.sync += [delayed.eq(finished), delayed_mode.eq(finished_mode)]
            finished, finished_mode = delayed, delayed_mode
        with m.If(finished):
            m.d.sync += [draining.eq(1), drain_mode.eq(finished_mode), beat.eq(0)]

        # Shadow index of beat n in a mode of p products per cycle: column n // p, accumulator n % p
        # (``lanes`` accumulators per PE, all powers of two).
        shadow = Signal(range(lanes * cols))
        with m.Switch(drain_mode):
            for mode in self._config.modes:
                per = mode.products_per_cycle
                with m.Case(mode):
                    m.d.comb += [
                        shadow.eq(((beat >> exact_log2(per)) * lanes) | (beat & (per - 1))),
                        last_beat.eq(beat == per * cols - 1),
                    ]
        for i in range(rows):
            flat = Array(pes[i][j].result[k] for j in range(cols) for k in range(lanes))
            m.d.comb += self.c.payload.c[i].eq(flat[shadow])
        m.d.comb += [
            self.c.valid.eq(draining),
            self.c.payload.last.eq(last_beat),
        ]
        with m.If(self.c.valid & self.c.ready):
            m.d.sync += beat.eq(beat + 1)
            with m.If(last_beat):
                m.d.sync += [draining.eq(0), in_flight.eq(0)]
        return m



def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): every beat taken at the inputs reaches PE ``(i, j)`` exactly
    ``i + j`` cycles later (its control, ``A`` row ``i`` and ``B`` column ``j``), none lost, duplicated or
    reordered, and ``a`` and ``b`` are taken together."""
    cfg = dut.config
    take = dut.a.valid & dut.a.ready
    m.d.comb += Assert(take == (dut.b.valid & dut.b.ready), "a and b are taken together")
    ctl = Signal(PEControl)
    m.d.comb += [ctl.valid.eq(take), ctl.last.eq(dut.a.payload.last), ctl.mode.eq(dut.a.payload.mode)]
    for i in range(cfg.rows):
        for j in range(cfg.cols):
            pe, seen = dut.pes[i][j], [ctl.as_value(), dut.a.payload.a[i], dut.b.payload.b[j].as_value()]
            for step in range(i + j):
                seen = [past(m, value, f"pe{i}{j}_{n}_{step}") for n, value in enumerate(seen)]
            valid = seen[0][0]
            m.d.comb += [Assert(pe.ctl.as_value() == seen[0], f"pe {i},{j}: control {i + j} cycles later"),
                         Assert(~valid | (pe.a.as_unsigned() == seen[1].as_unsigned()), f"pe {i},{j}: A row {i}"),
                         Assert(~valid | (pe.b.as_value() == seen[2]), f"pe {i},{j}: B column {j}")]


def formal_tiles(m, dut):
    """Checked by ``paro formal`` to a depth (the drain counter is not related to the harness's in unreachable
    states): ``c`` keeps the stream rules, and every tile whose last beat is taken leaves as exactly one drain
    of ``products_per_cycle x cols`` beats on ``c``, the last one marked, with no beat on ``c`` otherwise and
    at most one tile between its last input beat and its last output beat."""
    cfg = dut.config
    stream_held(m, dut.c, "c")
    take = dut.a.valid & dut.a.ready
    open_tile, mode, beats = Signal(), Signal(PEMode), Signal(range(cfg.pe_accumulators * cfg.cols))
    out = dut.c.valid & dut.c.ready
    with m.If(take & dut.a.payload.last):
        m.d.sync += [open_tile.eq(1), mode.eq(dut.a.payload.mode)]
    with m.If(out):
        m.d.sync += beats.eq(Mux(dut.c.payload.last, 0, beats + 1))
        with m.If(dut.c.payload.last):
            m.d.sync += open_tile.eq(0)
    m.d.comb += [Assert(~(take & dut.a.payload.last & open_tile), "one tile in flight at most"),
                 Assert(~dut.c.valid | open_tile, "no beat on c without a tile")]
    with m.Switch(mode):
        for each in cfg.modes:
            with m.Case(each):
                final = beats == each.products_per_cycle * cfg.cols - 1
                m.d.comb += Assert(~dut.c.valid | (dut.c.payload.last == final),
                                   "a tile drains products_per_cycle x cols beats")
