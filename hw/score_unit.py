"""Score unit: scales each drained column of QK^T scores into the base-2 exponent domain, writes it to the
score buffer and keeps every query's row maximum and its segment maximum in each kept block.

Golden twin: :func:`paro.sw.golden.score_unit` (``x = round(S * cq_i * ck_j / 2**score_shift)`` saturated at
``+-SCORE_LIMIT``, ``ck_j`` already x16 for 4-bit and x64 for 2-bit blocks, by :func:`~paro.sw.golden.scores_log2`;
row and segment maxima over real keys by :func:`~paro.sw.golden.softmax_row_max`).

A pass-A beat (``valid``) carries one key's scores for ``R`` queries (query group ``g`` of the tile). Three
stages, one beat per cycle, no back-pressure:

* stage 1 (the beat's cycle): the products ``S * cq_i * ck_j``, registered with the beat's query group, key,
  kept index and whether the key is real (``key_block * B + key < n_tokens``).
* stage 2 (the next cycle): ``x`` from the registered products (rounded shift by the head's ``score_shift``,
  saturation), registered with the beat's fields.
* stage 3 (the cycle after): the registered ``x`` written for those ``R`` (query, key) pairs to the score
  buffer (:class:`~.score_buffer.ScoreBuffer`: query group ``wr_group``, kept key ``wr_key = kept_index * B +
  key``); at its clock edge each query's row maximum rises if the key is real, and its segment maximum
  (restarted at key 0 of each block; the most negative score while the block has no real key).

``pending`` is high while a beat sits in the stage-1 or stage-2 register (the controller's ``A_WAIT`` waits
for it). The registers split the path from the array's drain through the multipliers, the variable rounded
shift and saturation, and the maxima's multiplexers and compare (each in turn the tiny engine's critical
path on ECP5). In the cycle after a block's last beat leaves stage 3 (key ``B - 1`` of query group ``B/R - 1``)
the unit writes all ``B`` segment maxima as one entry at the block's ``kept_index`` (``seg_wr_*``, the segment
buffer that pass B reads instead of rescanning the scores). ``reset`` (one cycle, before a query block's pass A,
with no beat in flight) sets every row maximum to the most negative score.
"""

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_LIMIT, SCORE_WIDTH

from .component import ConfiguredComponent
from .rounding import round_shift
from .tile_queue import ck_width, tile_layout

__all__ = ["ScoreUnit", "scaled_score"]

LOWEST_SCORE = -(1 << (SCORE_WIDTH - 1))


def scaled_score(m, product, shift, name):
    """A score from its unscaled product: ``round(product / 2**shift)`` saturated at ``+-SCORE_LIMIT``
    (:func:`paro.sw.golden.scores_log2`); a ``SCORE_WIDTH``-bit signal driven combinationally in ``m``."""
    wide = Signal(signed(len(product)), name=f"{name}_wide")
    x = Signal(signed(SCORE_WIDTH), name=name)
    m.d.comb += [wide.eq(round_shift(product, shift)),
                 x.eq(Mux(wide > SCORE_LIMIT, SCORE_LIMIT, Mux(wide < -SCORE_LIMIT, -SCORE_LIMIT, wide)))]
    return x


class ScoreUnit(ConfiguredComponent):
    def __init__(self, config):
        R, B = config.rows, config.block_size
        super().__init__(config, {
            "valid": In(1), "column": In(data.ArrayLayout(signed(config.acc_width), R)),
            "tile": In(tile_layout(config)), "beat": In(range(config.engine_lanes)),
            "cq": In(16), "score_shift": In(6), "n_tokens": In(range(config.max_seq_len + 1)), "reset": In(1),
            "wr_en": Out(1), "wr_group": Out(range(B // R)), "wr_key": Out(range(config.max_kept_keys)),
            "wr_data": Out(data.ArrayLayout(signed(SCORE_WIDTH), R)),
            "row_max": Out(data.ArrayLayout(signed(SCORE_WIDTH), B)),
            "seg_wr_en": Out(1), "seg_wr_addr": Out(range(config.max_kept_blocks)),
            "seg_wr_data": Out(data.ArrayLayout(signed(SCORE_WIDTH), B)), "pending": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, B = cfg.rows, cfg.cols, cfg.block_size
        tile = self.tile
        maxima = [Signal(signed(SCORE_WIDTH), init=LOWEST_SCORE, name=f"row_max{q}") for q in range(B)]
        segments = [Signal(signed(SCORE_WIDTH), init=LOWEST_SCORE, name=f"seg_max{q}") for q in range(B)]
        m.d.comb += [self.row_max[q].eq(maxima[q]) for q in range(B)]
        m.d.comb += [self.seg_wr_data[q].eq(segments[q]) for q in range(B)]

        key = Signal(range(B))
        m.d.comb += key.eq((tile.key_group << tile.packing) * C + self.beat)
        products = [Signal(signed(cfg.acc_width + 16 + ck_width(cfg) + 1), name=f"scaled{r}") for r in range(R)]
        # stage 1: the products and what stage 2 needs of the beat, registered
        staged = Signal(data.StructLayout({"valid": 1, "real_key": 1, "key": range(B), "group": range(B // R),
                                           "kept_index": len(tile.kept_index)}))
        staged_products = [Signal.like(p, name=f"staged_scaled{r}") for r, p in enumerate(products)]
        m.d.comb += [products[r].eq(self.column[r] * self.cq * tile.ck) for r in range(R)]
        m.d.sync += staged.valid.eq(self.valid)
        with m.If(self.valid):
            m.d.sync += [staged.real_key.eq(tile.key_block * B + key < self.n_tokens), staged.key.eq(key),
                         staged.group.eq(tile.query_group), staged.kept_index.eq(tile.kept_index),
                         *(staged_products[r].eq(products[r]) for r in range(R))]
        # stage 2: the scaled scores, registered with the beat's fields
        scored = Signal.like(staged, name="scored")
        x_now = [scaled_score(m, staged_products[r], self.score_shift, f"x{r}") for r in range(R)]
        xs = [Signal.like(x, name=f"scored_x{r}") for r, x in enumerate(x_now)]
        m.d.sync += scored.valid.eq(staged.valid)
        with m.If(staged.valid):
            m.d.sync += [scored.eq(staged), *(xs[r].eq(x_now[r]) for r in range(R))]
        m.d.comb += [self.pending.eq(staged.valid | scored.valid), self.wr_en.eq(scored.valid),
                     self.wr_group.eq(scored.group), self.wr_key.eq(scored.kept_index * B + scored.key)]
        # stage 3: the score buffer write and the maxima
        for r, x in enumerate(xs):
            m.d.comb += self.wr_data[r].eq(x)
            # One pair of comparators per row: the beat's query group's maxima are selected, compared with x,
            # and the new values written back to that group's registers only (a case on the group).
            group_max, group_seg = (Signal(signed(SCORE_WIDTH), name=f"{n}{r}") for n in ("group_max", "group_seg"))
            new_max, new_seg = (Signal(signed(SCORE_WIDTH), name=f"{n}{r}") for n in ("new_max", "new_seg"))
            m.d.comb += [
                group_max.eq(Array(maxima[g * R + r] for g in range(B // R))[scored.group]),
                group_seg.eq(Array(segments[g * R + r] for g in range(B // R))[scored.group]),
                new_max.eq(Mux(scored.real_key & (x > group_max), x, group_max)),
                new_seg.eq(Mux(scored.key == 0, Mux(scored.real_key, x, LOWEST_SCORE),
                               Mux(scored.real_key & (x > group_seg), x, group_seg))),
            ]
            with m.If(scored.valid), m.Switch(scored.group):
                for group in range(B // R):
                    with m.Case(group):
                        m.d.sync += [maxima[group * R + r].eq(new_max), segments[group * R + r].eq(new_seg)]
        # The block's last beat: its segment maxima are final at this edge, written in the next cycle.
        m.d.sync += self.seg_wr_en.eq(scored.valid & (scored.key == B - 1) & (scored.group == B // R - 1))
        with m.If(scored.valid):
            m.d.sync += self.seg_wr_addr.eq(scored.kept_index)
        with m.If(self.reset):
            m.d.sync += [reg.eq(LOWEST_SCORE) for reg in maxima]
        return m
