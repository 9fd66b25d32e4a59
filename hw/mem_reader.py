"""Memory reader: the read half of the engine's AXI4 master. Turns a request for consecutive token rows into
INCR bursts and the returned beats into token rows.

Golden twin: :func:`paro.sw.golden.memory_reader` (the bursts, by :func:`~paro.sw.golden.axi_bursts`, and the
rows). A request ``{addr, rows}`` reads ``rows * head_dim`` bytes from ``addr``.

Cycle behaviour: ``req`` is taken when the reader is idle. From the next cycle it offers one AR burst per cycle
(``arvalid`` held until ``arready``; each as long as ``MAX_BURST_BEATS`` and ``BURST_BOUNDARY`` allow), all of
the request's bursts outstanding at once. R beats are taken whenever they do not complete a row while the
previous row still waits on ``row`` (``8 * head_dim / axi_data_bits`` beats a row, first beat lowest bytes).
A completed row is offered on ``row`` from the cycle after its last beat. The reader is idle again in the
cycle after the request's last row is taken. ``beat`` is high in every cycle an R beat is taken.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import Assert, Assume
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from paro.sw.contract import AXI_ADDRESS_BITS, BURST_BOUNDARY, MAX_BURST_BEATS, descriptor_lines, engine_buffers

from .axi4 import BURST_INCR, axi4_read_signature
from .component import EngineBlock
from .formal import held, stream_held
from .operand_feed import row_layout

__all__ = ["MemoryReader", "read_request_layout", "max_request_rows", "formal_properties", "formal_bursts"]


def max_request_rows(config):
    """Most lines one request reads: a block's token rows, a bitmap row, the block table or a descriptor."""
    buffers = engine_buffers(config)
    return max(config.block_size, buffers["bitmap_rows"]["entries"] // 2, buffers["block_table"]["entries"],
               descriptor_lines(config))


def read_request_layout(config):
    """A read request: ``rows`` consecutive lines (``head_dim`` bytes each) from byte address ``addr``."""
    return data.StructLayout({"addr": AXI_ADDRESS_BITS, "rows": range(max_request_rows(config) + 1)})


class MemoryReader(EngineBlock):
    def __init__(self, config):
        super().__init__(config, {
            "req": In(stream.Signature(read_request_layout(config))),
            "row": Out(stream.Signature(row_layout(config))),
            "axi": Out(axi4_read_signature(config.axi_data_bits)), "beat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, axi = self._config, self.axi
        width, row_bits = cfg.axi_data_bits, 8 * cfg.head_dim
        beat_bytes, per_row = width // 8, row_bits // width
        longest = min(MAX_BURST_BEATS * beat_bytes, BURST_BOUNDARY)
        busy = Signal()
        most = max_request_rows(cfg)
        address, to_request = Signal(AXI_ADDRESS_BITS), Signal(range(most * cfg.head_dim + 1))
        rows_left, count = Signal(range(most + 1)), Signal(range(per_row))
        shift, out_row = Signal(row_bits), Signal(row_bits)
        size = Signal(range(longest + 1))
        room = Signal(range(longest + 1))
        m.d.comb += [
            self.req.ready.eq(~busy),
            room.eq(longest - address[:(longest - 1).bit_length()]),
            size.eq(Mux(to_request < room, to_request, room)),
            axi.arid.eq(0), axi.araddr.eq(address), axi.arlen.eq((size // beat_bytes) - 1),
            axi.arsize.eq((beat_bytes - 1).bit_length()), axi.arburst.eq(BURST_INCR),
            axi.arvalid.eq(busy & (to_request != 0)),
            axi.rready.eq(~((count == per_row - 1) & self.row.valid & ~self.row.ready)),
            self.beat.eq(axi.rvalid & axi.rready),
            self.row.payload.as_value().eq(out_row),
        ]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [busy.eq(1), address.eq(self.req.payload.addr), rows_left.eq(self.req.payload.rows),
                         to_request.eq(self.req.payload.rows * cfg.head_dim)]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [address.eq(address + size), to_request.eq(to_request - size)]

        with m.If(self.row.valid & self.row.ready):
            m.d.sync += [self.row.valid.eq(0), rows_left.eq(rows_left - 1)]
            with m.If(rows_left == 1):
                m.d.sync += busy.eq(0)
        with m.If(self.beat):
            assembled = Cat(shift[width:], axi.rdata) if per_row > 1 else axi.rdata
            m.d.sync += [shift.eq(assembled), count.eq(count + 1)]
            with m.If(count == per_row - 1):
                m.d.sync += [count.eq(0), out_row.eq(assembled), self.row.valid.eq(1)]
        return m


def formal_properties(m, dut):
    """Proved by ``paro formal`` (k-induction): ``row`` keeps the stream rules; the AR channel keeps AXI's
    (``arvalid`` and the address and length held until ``arready``); ``rready`` is low only while a completed
    row waits. Assumed: ``req`` keeps the stream rules and the memory returns R beats only for bursts it
    accepted (no more beats than the accepted ARs' lengths add up to); request addresses are token-row aligned
    (the contract's regions are 4 KiB-aligned, rows ``head_dim`` bytes)."""
    axi = dut.axi
    stream_held(m, dut.row, "row")
    held(m, axi.arvalid, axi.arready, Cat(axi.araddr, axi.arlen, axi.arsize, axi.arburst), "ar")
    stream_held(m, dut.req, "req", assume=True)
    m.d.comb += Assert(axi.rready | dut.row.valid, "rready low only while a row waits")
    owed = Signal(16)                        # beats of accepted bursts not yet returned
    asked = Mux(axi.arvalid & axi.arready, axi.arlen + 1, 0)
    m.d.sync += owed.eq(owed + asked - (axi.rvalid & axi.rready))
    m.d.comb += [Assume(~axi.rvalid | (owed != 0)),
                 Assume(~dut.req.valid | (dut.req.payload.addr % dut._config.head_dim == 0))]


def formal_bursts(m, dut):
    """Checked by ``paro formal`` to a depth: every AR burst lies inside the request being served and within
    one 4 KiB page, at most ``MAX_BURST_BEATS`` long, and a request's bursts add up to exactly its bytes.
    Assumed as in :func:`formal_properties`, and a request ends inside the address space."""
    formal_properties(m, dut)
    axi, cfg = dut.axi, dut.config
    beat_bytes = cfg.axi_data_bits // 8
    low, high, asked_bytes = Signal(AXI_ADDRESS_BITS + 1), Signal(AXI_ADDRESS_BITS + 1), Signal(AXI_ADDRESS_BITS + 1)
    with m.If(dut.req.valid & dut.req.ready):
        m.d.comb += Assert(asked_bytes == high - low, "ar: a request's bursts cover it")
        m.d.sync += [low.eq(dut.req.payload.addr), high.eq(dut.req.payload.addr + dut.req.payload.rows * cfg.head_dim),
                     asked_bytes.eq(0)]
    m.d.comb += Assume(dut.req.payload.addr + dut.req.payload.rows * cfg.head_dim <= (1 << AXI_ADDRESS_BITS))
    burst = (axi.arlen + 1) * beat_bytes
    with m.If(axi.arvalid):
        m.d.comb += [Assert((axi.araddr >= low) & (axi.araddr + burst <= high), "ar: inside the request"),
                     Assert(axi.araddr[:12] + burst <= BURST_BOUNDARY, "ar: within a 4 KiB page"),
                     Assert(axi.arlen < MAX_BURST_BEATS, "ar: at most MAX_BURST_BEATS beats")]
        with m.If(axi.arready):
            m.d.sync += asked_bytes.eq(asked_bytes + burst)
