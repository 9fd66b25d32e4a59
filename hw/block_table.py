"""Block table: the per-block score and value multipliers of the head being run, read from memory once per head.

Golden twin: :func:`paro.sw.golden.block_table` (block ``j``'s record ``{CQ, CK, CV8, CV4}`` from the table's
bytes; layout in :mod:`paro.sw.contract`: four little-endian ``uint16`` per block, ``head_dim / 8`` blocks a
line).

The fetcher writes the table's lines (``we``, ``addr`` = line index, ``data``; at the clock edge) into a
memory of ``ceil(8 * max_blocks / head_dim)`` lines. Four combinational read ports give ``cq_data``,
``ck_data``, ``cv8_data`` and ``cv4_data`` of the blocks at ``cq_addr`` (a query block), ``ck_addr``,
``cv8_addr`` and ``cv4_addr`` (key blocks) in the same cycle. A build with speculation (``spec_lanes``) has two
more, ``spec_cq`` and ``spec_ck`` (the speculation path's own, :class:`~.spec_control.SpecControl`).
"""

from amaranth import Module
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.sw.contract import TABLE_FIELDS, TABLE_RECORD_BYTES, engine_buffers

from .component import EngineBlock
from .word_mux import word_mux

__all__ = ["BlockTable"]


def _read_ports(config):
    """``{port prefix: table field}`` of the read ports."""
    spec = {"spec_cq": "CQ", "spec_ck": "CK"} if config.spec_lanes else {}
    return {**{name.lower(): name for name in TABLE_FIELDS}, **spec}


class BlockTable(EngineBlock):
    def __init__(self, config):
        lines = engine_buffers(config)["block_table"]["entries"]
        ports = _read_ports(config)
        super().__init__(config, {
            "we": In(1), "addr": In(range(max(lines, 2))), "data": In(8 * config.head_dim),
            **{f"{port}_addr": In(range(config.max_blocks)) for port in ports},
            **{f"{port}_data": Out(16) for port in ports},
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        per_line = cfg.head_dim // TABLE_RECORD_BYTES             # records per line, a power of two >= 1
        shift = per_line.bit_length() - 1
        m.submodules.lines = lines = Memory(shape=8 * cfg.head_dim,
                                            depth=engine_buffers(cfg)["block_table"]["entries"], init=[])
        write = lines.write_port()
        m.d.comb += [write.en.eq(self.we), write.addr.eq(self.addr), write.data.eq(self.data)]
        for port, name in _read_ports(cfg).items():
            read = lines.read_port(domain="comb")
            block = getattr(self, f"{port}_addr")
            record = block[:shift] if shift else 0
            m.d.comb += [read.addr.eq(block >> shift),
                         getattr(self, f"{port}_data").eq(
                             word_mux(read.data, record, 8 * TABLE_RECORD_BYTES).word_select(
                                 TABLE_FIELDS.index(name), 16))]
        return m
