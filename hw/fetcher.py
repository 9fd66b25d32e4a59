"""Fetcher: brings what the engine wants into its on-chip buffers, reading memory only for what is not already
there, and prefetches what the controller will want next.

Golden twin: :func:`paro.sw.golden.fetcher` (the read requests of a head: its descriptor and block table,
each query block's Q rows and bitmap row once, and the K and V rows of each kept block whenever the block
cache, :class:`~.kv_cache.BlockCache`, does not hold them). 0-bit blocks are never wanted, so they cost no
memory traffic.

Interface: two want streams of ``{kind, block}``, each held until ``ready``. ``want`` (the controller's):
``WANT_Q`` (query block ``block``'s Q rows and bitmap row), ``WANT_K``, ``WANT_V``; ``ready`` in the same
cycle if the rows are on chip (with ``slot``, the cache slot of a K or V block), else after the fetch: for a
block without a slot, the cache's eviction (one cycle with a free slot, else ``kv_cache_blocks`` cycles);
one cycle to issue ``req`` (to :class:`~.mem_reader.MemoryReader`); one buffer write per line taken from
``row``; ``ready`` in the cycle after the last. ``meta`` (the layer sequencer's): ``WANT_DESC`` (descriptor
``block`` of the list at ``desc_addr``) or ``WANT_TABLE`` (the block table at ``table_addr``), always read,
``ready`` in the first idle cycle after the last line. Writes: K and V rows to ``slot * B + row``
(``k_we``/``v_we``); Q rows to half ``block % 2`` of the two-block Q buffer (``q_we``, ``(block % 2) * B +
row``), then the bitmap row's ``bitmap_lines`` lines to the same half of the bitmap row buffer
(``bitmap_we``); descriptor and table lines at their index (``desc_we``, ``table_we``). All with
``wr_addr`` and ``wr_data``.

Prefetch (background fetches): serving query block ``i``'s Q arms a prefetch of query block ``i + 1`` (Q and
bitmap row) if it is below ``row_end`` (the other halves, not in use); fetching a K block arms a prefetch of
the same block's V into its slot (pass B will want it); and the controller's ``hint`` (the scheduler's next
kept block, K in pass A, V in pass B, while the current block computes) is fetched when it is not on chip,
so a miss overlaps compute (K/V double-buffering through the cache; only with two slots or more, where LRU
never takes the slot of the block being computed, the most recently wanted). Order in ``IDLE``: the V
prefetch, a waiting want, a meta want, the Q prefetch, the hint. A hinted block is fetched in the order
the controller will want it, after the current block's want touched its slot, so the cache makes the same
decisions as for the wants alone: :func:`paro.sw.golden.kv_cache` still predicts every fetch.
``start`` (a new head) empties the cache and forgets both Q halves.

Speculation (a build with ``spec_lanes``): ``meta`` also takes ``WANT_POOL`` (key block ``block``'s K rows,
always read, like a meta want); its lines go out with ``pool_we`` (to the pooling unit, no buffer). ``q_tags``
names the query block each Q half holds (``max_blocks``: none), complete with its bitmap row.
"""

from amaranth import Module, Mux, Signal
from amaranth.hdl import Assert, Assume
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.sw.contract import AXI_ADDRESS_BITS, descriptor_lines, descriptor_stride, engine_buffers

from .component import EngineBlock
from .formal import free_constant, stream_held
from .kv_cache import WANT_DESC, WANT_K, WANT_POOL, WANT_Q, WANT_TABLE, WANT_V, BlockCache, want_layout
from .mem_reader import max_request_rows, read_request_layout
from .operand_feed import row_layout

__all__ = ["Fetcher", "write_lines", "formal_properties"]


def write_lines(config):
    """Write addresses the fetcher drives: a K/V slot's rows, both Q halves, both bitmap halves, or a request's
    lines (with one cache slot the Q buffer is the deepest: leaving it out wrapped odd query blocks' Q rows onto
    the even half)."""
    return max(config.kv_cache_blocks * config.block_size, 2 * config.block_size,
               engine_buffers(config)["bitmap_rows"]["entries"], max_request_rows(config))


def _log2(value):
    return value.bit_length() - 1


class Fetcher(EngineBlock):
    def __init__(self, config):
        lines = engine_buffers(config)["bitmap_rows"]["entries"] // 2
        super().__init__(config, {
            "start": In(1), "row_end": In(range(config.max_blocks + 1)),
            **{f"{t}_addr": In(AXI_ADDRESS_BITS) for t in ("q", "k", "v", "bitmap", "table", "desc")},
            "bitmap_lines": In(range(lines + 1)),
            "table_lines": In(range(engine_buffers(config)["block_table"]["entries"] + 1)),
            "want": In(stream.Signature(want_layout(config))), "slot": Out(range(config.kv_cache_blocks)),
            "hint": In(want_layout(config)), "hint_valid": In(1),
            "meta": In(stream.Signature(want_layout(config))),
            "req": Out(stream.Signature(read_request_layout(config))),
            "row": In(stream.Signature(row_layout(config))),
            "q_we": Out(1), "k_we": Out(1), "v_we": Out(1), "bitmap_we": Out(1), "desc_we": Out(1),
            "table_we": Out(1),
            "wr_addr": Out(range(write_lines(config))), "wr_data": Out(row_layout(config)),
            **({"pool_we": Out(1), "q_tags": Out(data.ArrayLayout(range(config.max_blocks + 1), 2))}
               if config.spec_lanes else {}),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B, d = cfg.block_size, cfg.head_dim
        half_lines = engine_buffers(cfg)["bitmap_rows"]["entries"] // 2
        layout = data.StructLayout({**{n: f.shape for n, f in want_layout(cfg)}, "slot": range(cfg.kv_cache_blocks),
                                    "part": 1})
        m.submodules.cache = cache = BlockCache(cfg)
        want = self.want.payload
        q_tag = [Signal(range(cfg.max_blocks + 1), name=f"q_tag{h}", init=cfg.max_blocks) for h in range(2)]
        prefetch_q, prefetch_v = Signal(layout), Signal(layout)
        pending_q, pending_v, meta_done = Signal(), Signal(), Signal()

        def q_on_chip(block):
            return Mux(block[0], q_tag[1], q_tag[0]) == block

        # The fetch in progress (from a want, a meta want or a prefetch): its address, lines and line count.
        current, row_index = Signal(layout), Signal(range(max_request_rows(cfg)))
        bitmap_part = (current.kind == WANT_Q) & current.part
        kind = current.kind
        address, lines = Signal(AXI_ADDRESS_BITS), Signal(range(max_request_rows(cfg) + 1))
        with m.Switch(kind):
            with m.Case(WANT_Q):
                m.d.comb += [address.eq(Mux(current.part,
                                            self.bitmap_addr + ((current.block * self.bitmap_lines) << _log2(d)),
                                            self.q_addr + (current.block << _log2(B * d)))),
                             lines.eq(Mux(current.part, self.bitmap_lines, B))]
            with m.Case(WANT_K, WANT_V, *((WANT_POOL,) if cfg.spec_lanes else ())):
                base = Mux(kind == WANT_V, self.v_addr, self.k_addr)
                m.d.comb += [address.eq(base + (current.block << _log2(B * d))), lines.eq(B)]
            with m.Case(WANT_DESC):
                m.d.comb += [address.eq(self.desc_addr + (current.block << _log2(descriptor_stride(cfg)))),
                             lines.eq(descriptor_lines(cfg))]
            with m.Case(WANT_TABLE):
                m.d.comb += [address.eq(self.table_addr), lines.eq(self.table_lines)]
        # The cache looks up the block being installed (EVICT), else the want, else the hint.
        want_hit, want_miss, evicting, hint_miss = Signal(), Signal(), Signal(), Signal()
        lookup = Signal(want_layout(cfg))
        with m.If(evicting):
            m.d.comb += [lookup.kind.eq(current.kind), lookup.block.eq(current.block)]
        with m.Else():
            m.d.comb += lookup.eq(Mux(self.want.valid, want, self.hint))
        m.d.comb += [
            cache.start.eq(self.start), cache.block.eq(lookup.block), cache.kind.eq(lookup.kind),
            self.slot.eq(cache.slot),
            self.req.payload.addr.eq(address), self.req.payload.rows.eq(lines),
            self.wr_addr.eq(Mux(kind == WANT_Q, Mux(current.part, current.block[0] * half_lines, current.block[0] * B),
                                Mux((kind == WANT_K) | (kind == WANT_V), current.slot * B, 0)) + row_index),
            self.wr_data.eq(self.row.payload),
            want_hit.eq(self.want.valid & ~evicting & Mux(want.kind == WANT_Q, q_on_chip(want.block), cache.hit)),
            # A hinted block is fetched early only with two slots or more: LRU then never takes the slot of the
            # block being computed (the most recently wanted).
            hint_miss.eq(self.hint_valid & ~self.want.valid & ~cache.hit & (cfg.kv_cache_blocks > 1)),
            want_miss.eq(self.want.valid & ~want_hit), self.want.ready.eq(want_hit),
            cache.touch.eq(want_hit & (want.kind != WANT_Q)), cache.touch_slot.eq(cache.slot),
            self.meta.ready.eq(self.meta.valid & meta_done),
        ]
        with m.If(self.meta.valid & self.meta.ready):
            m.d.sync += meta_done.eq(0)
        with m.If(want_hit & (want.kind == WANT_Q) & (want.block + 1 < self.row_end)):
            m.d.sync += [pending_q.eq(1), prefetch_q.kind.eq(WANT_Q), prefetch_q.block.eq(want.block + 1),
                         prefetch_q.part.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(pending_v):
                    m.d.sync += [current.eq(prefetch_v), pending_v.eq(0)]
                    with m.If(~cache.v_valid.bit_select(prefetch_v.slot, 1)):
                        m.next = "REQUEST"
                with m.Elif(want_miss & ((want.kind == WANT_Q) | cache.present)):
                    m.d.sync += [current.kind.eq(want.kind), current.block.eq(want.block), current.slot.eq(cache.slot),
                                 current.part.eq(0)]
                    m.next = "REQUEST"
                with m.Elif(want_miss):
                    m.d.comb += cache.evict.eq(1)
                    m.d.sync += [current.kind.eq(want.kind), current.block.eq(want.block), current.part.eq(0)]
                    m.next = "EVICT"
                with m.Elif(self.meta.valid & ~meta_done):
                    m.d.sync += [current.kind.eq(self.meta.payload.kind), current.block.eq(self.meta.payload.block),
                                 current.part.eq(0)]
                    m.next = "REQUEST"
                with m.Elif(pending_q):
                    m.d.sync += [current.eq(prefetch_q), pending_q.eq(0)]
                    with m.If(~q_on_chip(prefetch_q.block)):
                        m.next = "REQUEST"
                with m.Elif(hint_miss):
                    m.d.sync += [current.kind.eq(self.hint.kind), current.block.eq(self.hint.block),
                                 current.slot.eq(cache.slot), current.part.eq(0)]
                    with m.If(cache.present):
                        m.next = "REQUEST"
                    with m.Else():
                        m.d.comb += cache.evict.eq(1)
                        m.next = "EVICT"
            with m.State("EVICT"):
                m.d.comb += evicting.eq(1)
                with m.If(cache.victim_valid):
                    m.d.comb += cache.install.eq(1)
                    m.d.sync += current.slot.eq(cache.victim)
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += self.req.valid.eq(1)
                with m.If(self.req.ready):
                    m.d.sync += row_index.eq(0)
                    m.next = "FILL"
            with m.State("FILL"):
                m.d.comb += [self.row.ready.eq(1),
                             self.q_we.eq(self.row.valid & (kind == WANT_Q) & ~current.part),
                             self.bitmap_we.eq(self.row.valid & bitmap_part),
                             self.k_we.eq(self.row.valid & (kind == WANT_K)),
                             self.v_we.eq(self.row.valid & (kind == WANT_V)),
                             self.desc_we.eq(self.row.valid & (kind == WANT_DESC)),
                             self.table_we.eq(self.row.valid & (kind == WANT_TABLE))]
                if cfg.spec_lanes:
                    m.d.comb += self.pool_we.eq(self.row.valid & (kind == WANT_POOL))
                with m.If(self.row.valid):
                    m.d.sync += row_index.eq(row_index + 1)
                    with m.If(row_index == lines - 1):
                        m.next = "IDLE"
                        with m.Switch(kind):
                            with m.Case(WANT_Q):
                                with m.If(~current.part):
                                    m.d.sync += current.part.eq(1)            # then the bitmap row
                                    m.next = "REQUEST"
                                with m.Else():
                                    m.d.sync += [q_tag[h].eq(Mux(current.block[0] == h, current.block, q_tag[h]))
                                                 for h in range(2)]
                            with m.Case(WANT_K, WANT_V):
                                m.d.comb += [cache.fill.eq(1), cache.fill_slot.eq(current.slot),
                                             cache.fill_kind.eq(kind)]
                                with m.If(kind == WANT_K):
                                    m.d.sync += [pending_v.eq(1), prefetch_v.eq(current), prefetch_v.kind.eq(WANT_V)]
                            with m.Default():
                                m.d.sync += meta_done.eq(1)
        with m.If(self.start):
            m.d.sync += [pending_q.eq(0), pending_v.eq(0), q_tag[0].eq(cfg.max_blocks), q_tag[1].eq(cfg.max_blocks)]
        if cfg.spec_lanes:
            m.d.comb += [self.q_tags[h].eq(q_tag[h]) for h in range(2)]
        return m


def formal_properties(m, dut):
    """Checked by ``paro formal`` to a depth: ``req`` keeps the stream rules, and every request lies inside a
    programmed region: Q, K, V (``n_blocks x B`` rows from their base), the bitmap (``n_blocks x
    bitmap_lines`` lines), the descriptor list (``n_heads`` descriptors) or the block table. Assumed, for one
    layer: the bases, line counts, ``row_end <= n_blocks`` and the regions' ends inside the address space are
    fixed (free constants); the want streams keep the stream rules and name blocks of the head (the
    scheduler's bound, proved there) or descriptors of the list; ``row`` keeps the stream rules."""
    cfg = dut.config
    B, d = cfg.block_size, cfg.head_dim
    stream_held(m, dut.req, "req")
    for port in (dut.want, dut.meta, dut.row):
        stream_held(m, port, "in", assume=True)
    n_blocks = free_constant(m, range(1, cfg.max_blocks + 1), "n_blocks")
    n_heads = free_constant(m, range(1, cfg.max_heads + 1), "n_heads")
    fixed = [dut.row_end, dut.bitmap_lines, dut.table_lines] + [getattr(dut, f"{t}_addr") for t in
                                                                 ("q", "k", "v", "bitmap", "table", "desc")]
    for n, value in enumerate(fixed):
        m.d.comb += Assume(value == free_constant(m, len(value), f"fixed{n}"))
    regions = {"q": n_blocks * B * d, "k": n_blocks * B * d, "v": n_blocks * B * d,
               "bitmap": n_blocks * dut.bitmap_lines * d, "table": dut.table_lines * d,
               "desc": n_heads * descriptor_stride(cfg)}
    m.d.comb += [Assume((n_blocks >= 1) & (n_heads >= 1) & (dut.row_end <= n_blocks)),
                 Assume(~dut.want.valid | ((dut.want.payload.block < n_blocks) & (dut.want.payload.kind <= WANT_V))),
                 Assume(~dut.hint_valid | ((dut.hint.block < n_blocks) & (dut.hint.kind >= WANT_K) &
                                           (dut.hint.kind <= WANT_V))),
                 Assume(~dut.meta.valid | (dut.meta.payload.kind == WANT_TABLE) |
                        ((dut.meta.payload.kind == WANT_DESC) & (dut.meta.payload.block < n_heads)))]
    inside = []
    req = dut.req.payload
    for name, size in regions.items():
        base = getattr(dut, f"{name}_addr")
        m.d.comb += Assume(base + size <= (1 << AXI_ADDRESS_BITS))
        inside.append((req.addr >= base) & (req.addr + req.rows * d <= base + size))
    with m.If(dut.req.valid):
        m.d.comb += Assert(sum(inside) != 0, "req: inside a programmed region")
