"""Score buffer: a query-block row's scaled scores (``block_size x max_kept_keys``, 48-bit), written by pass A
``rows`` queries a cycle and read by pass B's P lanes ``engine_lanes`` queries a cycle, in banks of one write
and one read port each, so every bank is a plain block RAM.

Golden twin: :func:`paro.sw.golden.score_buffer` (what the read ports return); the placement is
:func:`paro.sw.contract.score_buffer_place`: the score of query ``q`` and kept key ``k`` in bank ``q %
banks`` at address ``(q // banks) * max_kept_keys + k``, ``banks = max(rows, engine_lanes)``.

Write (``wr_en``; ``wr_group``: the queries ``wr_group * rows + r``; ``wr_key``: the kept key, ``kept_index *
block_size + key``; ``wr_data[r]``): at the clock edge, each score into its bank (an aligned group of
``rows`` queries: distinct banks, no multiplexer on the write side).

Read (``rd_en``, ``rd_query``, ``rd_key``): every bank reads address ``(rd_query // banks) * max_kept_keys +
rd_key`` at the clock edge; from the next cycle ``rd_data[n]`` is the score of query ``rd_query + n`` for
every lane whose query lies in ``rd_query``'s aligned group of ``banks`` queries (pass B's lanes always do;
lanes past a tile's queries read junk the P lanes ignore). Read data holds while ``rd_en`` is low; reads are
not transparent (pass A and pass B never overlap).
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.config import SCORE_WIDTH
from paro.sw.contract import score_buffer_geometry

from .component import EngineBlock
from .row_buffer import rotate

__all__ = ["ScoreBuffer"]


class ScoreBuffer(EngineBlock):
    def __init__(self, config):
        R, B, lanes = config.rows, config.block_size, config.engine_lanes
        self.geometry = score_buffer_geometry(config)
        super().__init__(config, {
            "wr_en": In(1), "wr_group": In(range(B // R)), "wr_key": In(range(config.max_kept_keys)),
            "wr_data": In(data.ArrayLayout(signed(SCORE_WIDTH), R)),
            "rd_en": In(1), "rd_query": In(range(B)), "rd_key": In(range(config.max_kept_keys)),
            "rd_data": Out(data.ArrayLayout(signed(SCORE_WIDTH), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, keys = cfg.rows, cfg.max_kept_keys
        banks = self.geometry["banks"]
        bank_bits, per_bank_groups = (banks - 1).bit_length(), banks // R      # write groups sharing an address
        group_bits = (per_bank_groups - 1).bit_length()
        write_slot = Signal(range(per_bank_groups))        # which R banks the write group takes
        m.d.comb += write_slot.eq(self.wr_group)
        rotation = Signal(range(banks))                    # of the read in flight: rd_query % banks
        with m.If(self.rd_en):
            m.d.sync += rotation.eq(self.rd_query)
        read_data = []
        for b in range(banks):
            memory = Memory(shape=signed(SCORE_WIDTH), depth=self.geometry["bank_entries"], init=[])
            m.submodules[f"bank{b}"] = memory
            write, read = memory.write_port(), memory.read_port()
            m.d.comb += [write.en.eq(self.wr_en & (write_slot == b // R)),
                         write.addr.eq((self.wr_group >> group_bits) * keys + self.wr_key),
                         write.data.eq(self.wr_data[b % R]),
                         read.en.eq(self.rd_en), read.addr.eq((self.rd_query >> bank_bits) * keys + self.rd_key)]
            read_data.append(read.data)
        lanes = rotate(read_data, rotation)[:cfg.engine_lanes]
        m.d.comb += [self.rd_data[n].eq(value) for n, value in enumerate(lanes)]
        return m
