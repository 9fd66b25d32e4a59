"""K/V block cache directory: which key block each of the ``kv_cache_blocks`` slots of the K and V buffers
holds, whether its K and its V rows are there, and which slot to evict (least recently used).

Golden twin: :func:`paro.sw.golden.kv_cache` (the slot and the fetches of every K or V want, in order).

A slot holds one key block: its K rows at ``slot * B`` of the K buffer, its V rows at the same place of the V
buffer, each with its own valid bit. Lookups are combinational: for ``block`` and ``kind`` (``WANT_K`` or
``WANT_V``), ``hit`` says the rows are there, ``present`` that the block has a slot (``slot``) even if this
kind is not there yet; ``v_valid`` has a bit per slot whose V rows are there. ``touch`` (one cycle, with
``touch_slot``) marks the slot used now: every served want touches its slot, so the use order is the want
order.

Eviction: ``evict`` (one cycle) starts the search for a slot for a block that has none: the lowest free slot
in the next cycle if one is free, else, after a scan of one slot per cycle (``kv_cache_blocks`` cycles), the
least recently touched. ``victim_valid`` is high for one cycle with ``victim``; ``install`` (one cycle, with
``victim``) then gives the slot to ``block`` with neither kind valid. ``fill`` (one cycle, with ``slot``
and ``kind``) marks a kind's rows as arrived. ``start`` empties every slot. The engine evicts while the
controller waits for a want, or for the next kept block while the current one computes (never the current
block's slot: it is the most recently touched, and there are at least two slots).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from .component import EngineBlock

__all__ = ["BlockCache", "want_layout", "WANT_Q", "WANT_K", "WANT_V", "WANT_DESC", "WANT_TABLE", "WANT_POOL"]

#: What the engine wants on chip: the Q rows (and bitmap row) of a query block, the K or V rows of a key
#: block (the controller's wants), a head's descriptor or its block table (the layer sequencer's), a key
#: block's K rows for the speculation's pooling (:class:`~.spec_control.SpecControl`'s; not kept).
WANT_Q, WANT_K, WANT_V, WANT_DESC, WANT_TABLE, WANT_POOL = 0, 1, 2, 3, 4, 5


def want_layout(config):
    """A want: its kind and the block (or, for a descriptor, the head) it names."""
    return data.StructLayout({"kind": 3, "block": range(max(config.max_blocks, config.max_heads))})


class BlockCache(EngineBlock):
    def __init__(self, config):
        slots = config.kv_cache_blocks
        super().__init__(config, {
            "start": In(1), "block": In(range(config.max_blocks)), "kind": In(3),
            "hit": Out(1), "present": Out(1), "slot": Out(range(slots)), "v_valid": Out(slots),
            "touch": In(1), "touch_slot": In(range(slots)),
            "evict": In(1), "victim_valid": Out(1), "victim": Out(range(slots)), "install": In(1),
            "fill": In(1), "fill_slot": In(range(slots)), "fill_kind": In(3),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        S = cfg.kv_cache_blocks
        stamp_bits = (2 * cfg.max_blocks * cfg.max_blocks).bit_length()
        tags = [Signal(range(cfg.max_blocks), name=f"tag{s}") for s in range(S)]
        k_valid, v_valid = Signal(S), self.v_valid
        stamps = [Signal(stamp_bits, name=f"stamp{s}") for s in range(S)]
        now = Signal(stamp_bits)

        # Lookup: the (single) slot whose tag is the block and that holds some of its rows.
        for s in reversed(range(S)):
            with m.If((tags[s] == self.block) & (k_valid[s] | v_valid[s])):
                m.d.comb += [self.present.eq(1), self.slot.eq(s),
                             self.hit.eq(Mux(self.kind == WANT_K, k_valid[s], Mux(self.kind == WANT_V, v_valid[s], 0)))]
        with m.If(self.touch):
            m.d.sync += now.eq(now + 1)
            for s in range(S):
                with m.If(self.touch_slot == s):
                    m.d.sync += stamps[s].eq(now)
        with m.If(self.fill):
            with m.If(self.fill_kind == WANT_K):
                m.d.sync += k_valid.bit_select(self.fill_slot, 1).eq(1)
            with m.If(self.fill_kind == WANT_V):
                m.d.sync += v_valid.bit_select(self.fill_slot, 1).eq(1)
        with m.If(self.install):
            m.d.sync += [k_valid.bit_select(self.victim, 1).eq(0), v_valid.bit_select(self.victim, 1).eq(0)]
            for s in range(S):
                with m.If(self.victim == s):
                    m.d.sync += tags[s].eq(self.block)

        # Eviction: lowest free slot, else the least recently touched (a scan of one slot per cycle).
        free = ~(k_valid | v_valid)
        scan, best, best_stamp = Signal(range(S + 1)), Signal(range(S)), Signal(stamp_bits)
        m.d.comb += self.victim.eq(best)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.evict & (free != 0)):
                    for s in reversed(range(S)):
                        with m.If(free[s]):
                            m.d.sync += best.eq(s)
                    m.next = "FOUND"
                with m.Elif(self.evict):
                    m.d.sync += [scan.eq(1), best.eq(0), best_stamp.eq(stamps[0])]
                    m.next = "SCAN" if S > 1 else "FOUND"
            with m.State("SCAN"):
                stamp = Signal(stamp_bits)
                for s in range(S):
                    with m.If(scan == s):
                        m.d.comb += stamp.eq(stamps[s])
                with m.If(stamp < best_stamp):
                    m.d.sync += [best.eq(scan), best_stamp.eq(stamp)]
                m.d.sync += scan.eq(scan + 1)
                with m.If(scan == S - 1):
                    m.next = "FOUND"
            with m.State("FOUND"):
                m.d.comb += self.victim_valid.eq(1)
                m.next = "IDLE"
        with m.If(self.start):
            m.d.sync += [k_valid.eq(0), v_valid.eq(0), now.eq(0)]
        return m
