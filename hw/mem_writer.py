"""Memory writer: the write half of the engine's AXI4 master. Writes each query block's output codes to memory.

Golden twin: :func:`paro.sw.golden.memory_writer` (the bursts, by :func:`~paro.sw.golden.axi_bursts`, and the
bytes: ``int16`` codes, little-endian, row-major at ``O_ADDR``).

Cycle behaviour: ``start`` (one cycle, ``addr`` = the block's first byte) arms a block of
``B * head_dim * 2`` bytes. AW bursts are offered one per cycle from the next cycle (``awvalid`` held until
``awready``), independent of the data. Each ``o`` beat (``R`` codes of one query, sign-extended to 16 bits) is
packed into the current W word, lowest bytes first; a full word is offered on W (``wlast`` on each burst's
final beat) and ``o`` is held back only while a full word waits for ``wready``. ``bready`` is always high.
``idle`` is high when every burst of the block has been answered on B (and before the first ``start``).
``beat`` is high in every cycle a W beat is taken.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

from paro.sw.contract import AXI_ADDRESS_BITS, BURST_BOUNDARY, MAX_BURST_BEATS, OUTPUT_CODE_BYTES

from .axi4 import BURST_INCR, axi4_write_signature
from .component import EngineBlock
from .output_stage import o_layout

__all__ = ["MemoryWriter"]


class MemoryWriter(EngineBlock):
    def __init__(self, config):
        super().__init__(config, {
            "start": In(1), "addr": In(AXI_ADDRESS_BITS), "idle": Out(1),
            "o": In(stream.Signature(o_layout(config))),
            "axi": Out(axi4_write_signature(config.axi_data_bits)), "beat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, axi = self._config, self.axi
        width, code_bits = cfg.axi_data_bits, 8 * OUTPUT_CODE_BYTES
        beat_bytes, per_word = width // 8, width // (code_bits * cfg.rows)
        block_bytes = cfg.block_size * cfg.head_dim * OUTPUT_CODE_BYTES
        burst_bytes = min(block_bytes, MAX_BURST_BEATS * beat_bytes, BURST_BOUNDARY)
        bursts, burst_beats = block_bytes // burst_bytes, burst_bytes // beat_bytes

        address = Signal(AXI_ADDRESS_BITS)
        to_address, unanswered = Signal(range(bursts + 1)), Signal(range(bursts + 1))
        word, count = Signal(width), Signal(range(per_word))
        beat_in_burst = Signal(range(burst_beats))
        m.d.comb += [
            axi.awid.eq(0), axi.awaddr.eq(address), axi.awlen.eq(burst_beats - 1),
            axi.awsize.eq((beat_bytes - 1).bit_length()), axi.awburst.eq(BURST_INCR),
            axi.awvalid.eq(to_address != 0),
            axi.wdata.eq(word), axi.wstrb.eq((1 << beat_bytes) - 1), axi.wlast.eq(beat_in_burst == burst_beats - 1),
            axi.bready.eq(1), self.beat.eq(axi.wvalid & axi.wready),
            self.o.ready.eq(~axi.wvalid | axi.wready),
            self.idle.eq(unanswered == 0),
        ]
        with m.If(self.start):
            m.d.sync += [address.eq(self.addr), to_address.eq(bursts), unanswered.eq(bursts)]
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += [address.eq(address + burst_bytes), to_address.eq(to_address - 1)]
        with m.If(axi.bvalid):
            m.d.sync += unanswered.eq(unanswered - 1)

        with m.If(self.beat):
            m.d.sync += [axi.wvalid.eq(0), beat_in_burst.eq(Mux(axi.wlast, 0, beat_in_burst + 1))]
        with m.If(self.o.valid & self.o.ready):
            codes = Cat(_sign_extend(self.o.payload.o[r], code_bits) for r in range(cfg.rows))
            packed = Cat(word[len(codes):], codes) if per_word > 1 else codes
            m.d.sync += [word.eq(packed), count.eq(count + 1)]
            with m.If(count == per_word - 1):
                m.d.sync += [count.eq(0), axi.wvalid.eq(1)]
        return m


def _sign_extend(value, bits):
    """``value`` (a signed code's bits) sign-extended to ``bits``."""
    return Cat(value, value[-1].replicate(bits - len(value)))
