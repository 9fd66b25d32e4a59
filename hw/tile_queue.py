"""Tile queue: what each array tile in flight is for, matched to the array's drained beats.

Golden twin: :func:`paro.sw.golden.tile_queue` (each drained beat paired with its tile's descriptor and its
beat index within the tile: ``C << packing`` beats per tile (C for 8-bit, 2C for 4-bit, 4C for 2-bit
blocks), in issue order).

The controller pushes a descriptor (:func:`tile_layout`) with a tile's first input beat (``push`` with
``push_en``; it may only issue while ``room``). The array drains a tile ``R + C - 1`` or more cycles later;
every drained beat comes out on ``column`` with ``valid`` (and ``qk_valid`` or ``pv_valid`` by its pass), the oldest descriptor on ``tile`` and the beat's
index on ``beat``; the descriptor is popped on the tile's last beat. The queue holds 4 descriptors (the array
has at most one tile computing and one draining, plus the issue pipeline). The array's ``c`` stream is
always ready: the score buffer and the output accumulator take one beat per cycle. ``empty`` is high when no
tile is in flight.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream
from amaranth.lib.wiring import In, Out

from paro.sw.golden import P_SHIFT_MAX, k_reduce_shift

from .array import c_layout
from .component import ConfiguredComponent

__all__ = ["TileQueue", "tile_layout", "ck_width", "cv_width"]


def ck_width(config):
    """Width of a tile's key multiplier: a 15-bit ``CK`` shifted by the largest K-reduction cut (4 or 6),
    plus one spare bit (20 without 2-bit blocks)."""
    return 16 + max(k_reduce_shift(b, config.k_cuts) for b in config.computed_bitwidths)


def cv_width(config):
    """Width of a tile's value multiplier: a 15-bit ``CV8``/``CV4`` (16), or ``5 x CV4`` below ``2**18`` for 2-bit
    blocks (19)."""
    return 19 if 2 in config.bitwidths else 16


def tile_layout(config):
    """Descriptor of one array tile: pass A (QK^T: query group x key group of a kept block) or pass B (PV:
    head-dimension group x query group), with the scale factors and shifts its drained beats need."""
    lanes = config.engine_lanes
    return data.StructLayout({
        "pass_b": 1,
        "query_group": range(config.block_size),
        "key_group": range(config.block_size),
        "dim_group": range(config.head_dim),
        "kept_index": range(config.max_kept_blocks + 1),  # position of the block among the row's kept blocks
        "key_block": range(config.max_blocks),
        "packing": 2,                                     # PACKING of the block's bits
        "ck": ck_width(config),                           # pass A: key block multiplier << k_reduce_shift
        "cv": cv_width(config),                           # pass B: value multiplier of the block's bitwidth
        "z": data.ArrayLayout(range(P_SHIFT_MAX + 1), lanes),
    })


class TileQueue(ConfiguredComponent):
    def __init__(self, config):
        super().__init__(config, {
            "push": In(tile_layout(config)), "push_en": In(1), "room": Out(1), "empty": Out(1),
            "c": In(stream.Signature(c_layout(config))),
            "valid": Out(1), "qk_valid": Out(1), "pv_valid": Out(1), "column": Out(data.ArrayLayout(signed(config.acc_width), config.rows)),
            "tile": Out(tile_layout(config)), "beat": Out(range(config.engine_lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        layout = tile_layout(self._config)
        m.submodules.descriptors = descriptors = fifo.SyncFIFO(width=layout.size, depth=4)
        beat = Signal(range(self._config.engine_lanes))
        m.d.comb += [
            descriptors.w_data.eq(self.push), descriptors.w_en.eq(self.push_en), self.room.eq(descriptors.w_rdy),
            self.empty.eq(descriptors.r_level == 0),
            self.c.ready.eq(1),
            self.valid.eq(self.c.valid), self.column.eq(self.c.payload.c), self.beat.eq(beat),
            self.tile.eq(descriptors.r_data),
            self.qk_valid.eq(self.c.valid & ~self.tile.pass_b), self.pv_valid.eq(self.c.valid & self.tile.pass_b),
            descriptors.r_en.eq(self.c.valid & self.c.payload.last),
        ]
        with m.If(self.c.valid):
            m.d.sync += beat.eq(Mux(self.c.payload.last, 0, beat + 1))
        return m
