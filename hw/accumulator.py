"""Output accumulator: adds each drained PV column, scaled by the block's V multiplier and shifted back by its
segment shift, into the per-query output accumulators (read-modify-write over two cycles).

Golden twin: :func:`paro.sw.golden.output_accumulator` (``A += round(U * cv / 2**z)``; the first kept block of
a query row overwrites instead of adding).

A pass-B beat (``valid``) carries ``R`` head dimensions (group ``dim_group``) of one query (lane ``beat`` of
query group ``query_group``). Cycle 0: the accumulator memory is read at ``query * d/R + dim_group`` and the
beat is registered; cycle 1: the sum is written back. Consecutive beats are different queries, so a write
never races the read of the next beat. ``pending`` is high while a beat sits between read and write: the
controller waits for it before the output stage reads. The output stage reads the memory through ``rd_*``
(synchronous, one cycle latency).
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.sw.golden import P_SHIFT_MAX

from .component import ConfiguredComponent
from .rounding import round_shift
from .tile_queue import cv_width, tile_layout

__all__ = ["OutputAccumulator", "accumulator_layout"]


def accumulator_layout(config):
    """One accumulator word: ``R`` head dimensions of one query, ``acc_out_width`` bits each."""
    return data.ArrayLayout(signed(config.acc_out_width), config.rows)


class OutputAccumulator(ConfiguredComponent):
    def __init__(self, config):
        depth = config.block_size * (config.head_dim // config.rows)
        super().__init__(config, {
            "valid": In(1), "column": In(data.ArrayLayout(signed(config.acc_width), config.rows)),
            "tile": In(tile_layout(config)), "beat": In(range(config.engine_lanes)),
            "pending": Out(1),
            "rd_addr": In(range(depth)), "rd_en": In(1), "rd_data": Out(accumulator_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, groups = cfg.rows, cfg.cols, cfg.head_dim // cfg.rows
        m.submodules.memory = memory = Memory(shape=accumulator_layout(cfg), depth=cfg.block_size * groups, init=[])
        write, read, out = memory.write_port(), memory.read_port(), memory.read_port()
        m.d.comb += [out.addr.eq(self.rd_addr), out.en.eq(self.rd_en), self.rd_data.eq(out.data)]

        staged = Signal(data.StructLayout({
            "valid": 1, "addr": range(cfg.block_size * groups), "first": 1, "z": range(P_SHIFT_MAX + 1),
            "cv": cv_width(cfg), "u": data.ArrayLayout(signed(cfg.acc_width), R)}))
        query = Signal(range(cfg.block_size))
        tile = self.tile
        m.d.comb += [query.eq((tile.query_group << tile.packing) * C + self.beat),
                     read.addr.eq(query * groups + tile.dim_group), read.en.eq(1), self.pending.eq(staged.valid)]
        m.d.sync += [staged.valid.eq(self.valid), staged.addr.eq(query * groups + tile.dim_group),
                     staged.first.eq(tile.kept_index == 0), staged.z.eq(tile.z[self.beat]), staged.cv.eq(tile.cv),
                     staged.u.eq(self.column)]
        for r in range(R):
            term = Signal(signed(cfg.acc_width + cv_width(cfg) + 1), name=f"term{r}")
            m.d.comb += [
                term.eq(round_shift(staged.u[r] * staged.cv, staged.z)),
                write.data[r].eq(Mux(staged.first, 0, read.data[r]) + term),
            ]
        m.d.comb += [write.addr.eq(staged.addr), write.en.eq(staged.valid)]
        return m
