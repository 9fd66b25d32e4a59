"""Fetcher: brings the token rows the controller wants into the on-chip buffers, reading memory only for
what is not already there, and prefetches what the controller will want next.

Golden twin: :func:`paro.sw.golden.fetcher` (the set of read requests of a head: each query block's Q rows
once, and the K and V rows of each kept block once). 0-bit blocks are never wanted, so they cost no memory
traffic.

Interface: the controller offers ``want`` ``{kind, block}`` (``WANT_Q``, ``WANT_K`` or ``WANT_V``) and holds it
until ``ready``. ``ready`` is high in the same cycle if the block's ``B`` rows are on chip, else after the
fetch: one cycle to issue ``req`` (to :class:`~.mem_reader.MemoryReader`), one buffer write per row taken from
``row`` (``k_we``/``v_we``/``q_we`` with ``wr_addr``, ``wr_data``), then ``ready`` in the cycle after the last
row. K and V rows go to ``block * B + row`` and stay for the rest of the head (``start`` forgets them); Q
rows go to half ``block % 2`` of the two-block Q buffer (``(block % 2) * B + row``).

Prefetch (background fetches, taken only while no want is waiting): serving query block ``i``'s Q arms a
prefetch of query block ``i + 1`` (the other Q half, not in use); fetching a K block arms a prefetch of the
same block's V (pass B will want it). A want always goes first; a background fetch in flight finishes before
a want's fetch starts.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.sw.contract import AXI_ADDRESS_BITS

from .component import EngineBlock
from .mem_reader import read_request_layout
from .operand_feed import row_layout

__all__ = ["Fetcher", "want_layout", "WANT_Q", "WANT_K", "WANT_V"]

WANT_Q, WANT_K, WANT_V = 0, 1, 2


def want_layout(config):
    """What the controller wants on chip: the Q rows of a query block, or the K or V rows of a key block."""
    return data.StructLayout({"kind": 2, "block": range(config.max_blocks)})


class Fetcher(EngineBlock):
    def __init__(self, config):
        super().__init__(config, {
            "start": In(1), "n_blocks": In(range(config.max_blocks + 1)),
            **{f"{t}_addr": In(AXI_ADDRESS_BITS) for t in "qkv"},
            "want": In(stream.Signature(want_layout(config))),
            "req": Out(stream.Signature(read_request_layout(config))),
            "row": In(stream.Signature(row_layout(config))),
            "q_we": Out(1), "k_we": Out(1), "v_we": Out(1),
            "wr_addr": Out(range(config.max_seq_len)), "wr_data": Out(row_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B, block_bytes, layout = cfg.block_size, cfg.block_size * cfg.head_dim, want_layout(cfg)
        k_on_chip, v_on_chip = Signal(cfg.max_blocks), Signal(cfg.max_blocks)
        q_tag = [Signal(range(cfg.max_blocks + 1), name=f"q_tag{h}", init=cfg.max_blocks) for h in range(2)]
        prefetch_q, prefetch_v = Signal(layout), Signal(layout)
        pending_q, pending_v = Signal(), Signal()

        def on_chip(want):
            q_half = Mux(want.block[0], q_tag[1], q_tag[0]) == want.block
            return Mux(want.kind == WANT_K, k_on_chip.bit_select(want.block, 1),
                       Mux(want.kind == WANT_V, v_on_chip.bit_select(want.block, 1), q_half))

        # The fetch in progress (from a want or a prefetch) and its row count.
        current, row_index = Signal(layout), Signal(range(B))
        base = Mux(current.kind == WANT_K, self.k_addr, Mux(current.kind == WANT_V, self.v_addr, self.q_addr))
        m.d.comb += [
            self.req.payload.addr.eq(base + current.block * block_bytes), self.req.payload.rows.eq(B),
            self.wr_addr.eq(Mux(current.kind == WANT_Q, current.block[0] * B, current.block * B) + row_index),
            self.wr_data.eq(self.row.payload),
        ]
        want_hit, want_miss = Signal(), Signal()
        m.d.comb += [want_hit.eq(self.want.valid & on_chip(self.want.payload)),
                     want_miss.eq(self.want.valid & ~on_chip(self.want.payload)), self.want.ready.eq(want_hit)]
        with m.If(want_hit & (self.want.payload.kind == WANT_Q) & (self.want.payload.block + 1 < self.n_blocks)):
            m.d.sync += [pending_q.eq(1), prefetch_q.kind.eq(WANT_Q), prefetch_q.block.eq(self.want.payload.block + 1)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(want_miss):
                    m.d.sync += current.eq(self.want.payload)
                    m.next = "REQUEST"
                with m.Elif(pending_v):
                    m.d.sync += [current.eq(prefetch_v), pending_v.eq(0)]
                    with m.If(~on_chip(prefetch_v)):
                        m.next = "REQUEST"
                with m.Elif(pending_q):
                    m.d.sync += [current.eq(prefetch_q), pending_q.eq(0)]
                    with m.If(~on_chip(prefetch_q)):
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
                        with m.Switch(current.kind):
                            with m.Case(WANT_K):
                                m.d.sync += [k_on_chip.bit_select(current.block, 1).eq(1), pending_v.eq(1),
                                             prefetch_v.kind.eq(WANT_V), prefetch_v.block.eq(current.block)]
                            with m.Case(WANT_V):
                                m.d.sync += v_on_chip.bit_select(current.block, 1).eq(1)
                            with m.Case(WANT_Q):
                                m.d.sync += [q_tag[h].eq(Mux(current.block[0] == h, current.block, q_tag[h]))
                                             for h in range(2)]
                        m.next = "IDLE"
        with m.If(self.start):
            m.d.sync += [k_on_chip.eq(0), v_on_chip.eq(0), pending_q.eq(0), pending_v.eq(0),
                         q_tag[0].eq(cfg.max_blocks), q_tag[1].eq(cfg.max_blocks)]
        return m
