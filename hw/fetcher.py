"""Fetcher: brings the token rows the controller wants into the on-chip buffers, reading memory only for
what is not already there, and prefetches what the controller will want next.

Golden twin: :func:`paro.sw.golden.fetcher` (the set of read requests of a head: each query block's Q rows
once, and the K and V rows of each kept block whenever the block cache, :class:`~.kv_cache.BlockCache`,
does not hold them). 0-bit blocks are never wanted, so they cost no memory traffic.

Interface: the controller offers ``want`` ``{kind, block}`` (``WANT_Q``, ``WANT_K`` or ``WANT_V``) and holds it
until ``ready``. ``ready`` is high in the same cycle if the rows are on chip (with ``slot``, the cache slot of
a K or V block), else after the fetch: for a block without a slot, the cache's eviction (one cycle with a
free slot, else ``kv_cache_blocks`` cycles); one cycle to issue ``req`` (to
:class:`~.mem_reader.MemoryReader`); one buffer write per row taken from ``row`` (``k_we``/``v_we``/``q_we``
with ``wr_addr``, ``wr_data``); ``ready`` in the cycle after the last row. K and V rows go to
``slot * B + row``; Q rows to half ``block % 2`` of the two-block Q buffer (``(block % 2) * B + row``).

Prefetch (background fetches): serving query block ``i``'s Q arms a prefetch of query block ``i + 1`` if it is
below ``row_end`` (the other Q half, not in use); fetching a K block arms a prefetch of the same block's V into
its slot (pass B will want it). The V prefetch goes before any other fetch, so the cache sees the same sequence
of fills for any memory timing; the Q prefetch goes after a waiting want.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.sw.contract import AXI_ADDRESS_BITS

from .component import EngineBlock
from .kv_cache import WANT_K, WANT_Q, WANT_V, BlockCache, want_layout
from .mem_reader import read_request_layout
from .operand_feed import row_layout

__all__ = ["Fetcher"]


class Fetcher(EngineBlock):
    def __init__(self, config):
        super().__init__(config, {
            "start": In(1), "row_end": In(range(config.max_blocks + 1)),
            **{f"{t}_addr": In(AXI_ADDRESS_BITS) for t in "qkv"},
            "want": In(stream.Signature(want_layout(config))), "slot": Out(range(config.kv_cache_blocks)),
            "req": Out(stream.Signature(read_request_layout(config))),
            "row": In(stream.Signature(row_layout(config))),
            "q_we": Out(1), "k_we": Out(1), "v_we": Out(1),
            "wr_addr": Out(range(config.kv_cache_blocks * config.block_size)), "wr_data": Out(row_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B, block_bytes = cfg.block_size, cfg.block_size * cfg.head_dim
        layout = data.StructLayout({**{n: f.shape for n, f in want_layout(cfg)}, "slot": range(cfg.kv_cache_blocks)})
        m.submodules.cache = cache = BlockCache(cfg)
        want = self.want.payload
        q_tag = [Signal(range(cfg.max_blocks + 1), name=f"q_tag{h}", init=cfg.max_blocks) for h in range(2)]
        prefetch_q, prefetch_v = Signal(layout), Signal(layout)
        pending_q, pending_v = Signal(), Signal()

        def q_on_chip(block):
            return Mux(block[0], q_tag[1], q_tag[0]) == block

        # The fetch in progress (from a want or a prefetch) and its row count.
        current, row_index = Signal(layout), Signal(range(B))
        base = Mux(current.kind == WANT_K, self.k_addr, Mux(current.kind == WANT_V, self.v_addr, self.q_addr))
        want_hit, want_miss = Signal(), Signal()
        m.d.comb += [
            cache.start.eq(self.start), cache.block.eq(want.block), cache.kind.eq(want.kind),
            self.slot.eq(cache.slot),
            self.req.payload.addr.eq(base + current.block * block_bytes), self.req.payload.rows.eq(B),
            self.wr_addr.eq(Mux(current.kind == WANT_Q, current.block[0] * B, current.slot * B) + row_index),
            self.wr_data.eq(self.row.payload),
            want_hit.eq(self.want.valid & Mux(want.kind == WANT_Q, q_on_chip(want.block), cache.hit)),
            want_miss.eq(self.want.valid & ~want_hit), self.want.ready.eq(want_hit),
            cache.touch.eq(want_hit & (want.kind != WANT_Q)), cache.touch_slot.eq(cache.slot),
        ]
        with m.If(want_hit & (want.kind == WANT_Q) & (want.block + 1 < self.row_end)):
            m.d.sync += [pending_q.eq(1), prefetch_q.kind.eq(WANT_Q), prefetch_q.block.eq(want.block + 1)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(pending_v):
                    m.d.sync += [current.eq(prefetch_v), pending_v.eq(0)]
                    with m.If(~cache.v_valid.bit_select(prefetch_v.slot, 1)):
                        m.next = "REQUEST"
                with m.Elif(want_miss & ((want.kind == WANT_Q) | cache.present)):
                    m.d.sync += [current.kind.eq(want.kind), current.block.eq(want.block), current.slot.eq(cache.slot)]
                    m.next = "REQUEST"
                with m.Elif(want_miss):
                    m.d.comb += cache.evict.eq(1)
                    m.next = "EVICT"
                with m.Elif(pending_q):
                    m.d.sync += [current.eq(prefetch_q), pending_q.eq(0)]
                    with m.If(~q_on_chip(prefetch_q.block)):
                        m.next = "REQUEST"
            with m.State("EVICT"):
                with m.If(cache.victim_valid):
                    m.d.comb += cache.install.eq(1)
                    m.d.sync += [current.kind.eq(want.kind), current.block.eq(want.block),
                                 current.slot.eq(cache.victim)]
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += self.req.valid.eq(1)
                with m.If(self.req.ready):
                    m.d.sync += row_index.eq(0)
                    m.next = "FILL"
            with m.State("FILL"):
                m.d.comb += [self.row.ready.eq(1), self.q_we.eq(self.row.valid & (current.kind == WANT_Q)),
                             self.k_we.eq(self.row.valid & (current.kind == WANT_K)),
                             self.v_we.eq(self.row.valid & (current.kind == WANT_V))]
                with m.If(self.row.valid):
                    m.d.sync += row_index.eq(row_index + 1)
                    with m.If(row_index == B - 1):
                        m.d.comb += [cache.fill.eq(current.kind != WANT_Q), cache.fill_slot.eq(current.slot),
                                     cache.fill_kind.eq(current.kind)]
                        with m.If(current.kind == WANT_K):
                            m.d.sync += [pending_v.eq(1), prefetch_v.eq(current), prefetch_v.kind.eq(WANT_V)]
                        with m.If(current.kind == WANT_Q):
                            m.d.sync += [q_tag[h].eq(Mux(current.block[0] == h, current.block, q_tag[h]))
                                         for h in range(2)]
                        m.next = "IDLE"
        with m.If(self.start):
            m.d.sync += [pending_q.eq(0), pending_v.eq(0), q_tag[0].eq(cfg.max_blocks), q_tag[1].eq(cfg.max_blocks)]
        return m
