"""AXI4 memory-master signatures of the engine (read and write halves), from the master's side.

Flattened on the engine's port ``m_axi`` the members become ``m_axi__araddr`` and so on: the names
cocotbext-axi's ``AxiBus.from_prefix(dut, "m_axi_")`` looks for. IDs are one bit and always 0 (every
transfer is in order); bursts are INCR (``burst = 1``) with full-width beats (``size = log2(data bytes)``).
Addresses, burst limits and the memory layout are :mod:`paro.sw.contract`'s.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from paro.sw.contract import AXI_ADDRESS_BITS

__all__ = ["axi4_read_signature", "axi4_write_signature", "axi4_signature", "BURST_INCR", "connect_members"]

BURST_INCR = 1


def axi4_read_signature(data_bits):
    return wiring.Signature({
        "arid": Out(1), "araddr": Out(AXI_ADDRESS_BITS), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(1), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1), "rvalid": In(1), "rready": Out(1),
    })


def axi4_write_signature(data_bits):
    return wiring.Signature({
        "awid": Out(1), "awaddr": Out(AXI_ADDRESS_BITS), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bid": In(1), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    })


def axi4_signature(data_bits):
    """The whole AXI4 master port: both halves, flat."""
    return wiring.Signature({**axi4_read_signature(data_bits).members,
                             **axi4_write_signature(data_bits).members})


def connect_members(m, outer, inner):
    """Drive a master half ``inner`` (a sub-block's port) onto the matching members of ``outer`` (the
    top's flat master port, same direction)."""
    for name, member in inner.signature.members.items():
        if member.flow == wiring.Out:
            m.d.comb += getattr(outer, name).eq(getattr(inner, name))
        else:
            m.d.comb += getattr(inner, name).eq(getattr(outer, name))
