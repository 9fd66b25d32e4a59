"""AXI4-Lite register slave: the engine's control port, bridged onto the register bus (:data:`.registers.CSRBus`).

Golden twin: :func:`paro.sw.golden.axi_lite_slave` (which register-bus access each transaction makes, and
its response). The address map, widths and rules are :mod:`paro.sw.contract`'s: byte address = word
address x 4 (``AXIL_ADDRESS_BITS``); only aligned, full-word accesses (``wstrb = 0b1111``) act, anything
else answers ``SLVERR`` and touches no register.

Cycle behaviour: a write is taken in the cycle both ``awvalid`` and ``wvalid`` are high and the response
slot is free (no response waiting, or ``bready`` taking it): ``awready``/``wready`` rise together, the
register bus write happens at that clock edge, and ``bvalid`` is high from the next cycle until ``bready``.
A read is taken when ``arvalid`` is high, the read slot is free and no write is taken in the same cycle
(writes win the shared register-bus address); the register is sampled at that edge (the register bus reads
combinationally) and ``rvalid`` is high from the next cycle until ``rready``. Back to back, one write and
one read each complete per cycle. ``ready`` outputs depend on ``valid`` inputs, never the reverse.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from paro.sw.contract import AXIL_ADDRESS_BITS, DATA_BITS, RESP_OKAY, RESP_SLVERR

from .registers import CSRBus

__all__ = ["AxiLiteSignature", "AxiLiteSlave"]

#: AXI4-Lite, from the master's side. Flattened, a port ``axil`` becomes ``axil__awaddr`` and so on, the
#: names cocotbext-axi's ``AxiLiteBus.from_prefix(dut, "axil_")`` looks for.
AxiLiteSignature = wiring.Signature({
    "awaddr": Out(AXIL_ADDRESS_BITS), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
    "wdata": Out(DATA_BITS), "wstrb": Out(DATA_BITS // 8), "wvalid": Out(1), "wready": In(1),
    "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    "araddr": Out(AXIL_ADDRESS_BITS), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
    "rdata": In(DATA_BITS), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
})


class AxiLiteSlave(wiring.Component):
    axil: In(AxiLiteSignature)
    csr: Out(CSRBus)

    def elaborate(self, platform):
        m = Module()
        bus, csr = self.axil, self.csr
        take_write, take_read = Signal(), Signal()
        write_legal = (bus.awaddr[:2] == 0) & (bus.wstrb == (1 << len(bus.wstrb)) - 1)
        read_legal = bus.araddr[:2] == 0
        m.d.comb += [
            take_write.eq(bus.awvalid & bus.wvalid & (~bus.bvalid | bus.bready)),
            take_read.eq(bus.arvalid & (~bus.rvalid | bus.rready) & ~take_write),
            bus.awready.eq(take_write), bus.wready.eq(take_write), bus.arready.eq(take_read),
            csr.we.eq(take_write & write_legal), csr.wdata.eq(bus.wdata),
            csr.addr.eq(Mux(take_write, bus.awaddr[2:], bus.araddr[2:])),
        ]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        with m.If(take_write):
            m.d.sync += [bus.bvalid.eq(1), bus.bresp.eq(Mux(write_legal, RESP_OKAY, RESP_SLVERR))]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(take_read):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(Mux(read_legal, RESP_OKAY, RESP_SLVERR)),
                         bus.rdata.eq(Mux(read_legal, csr.rdata, 0))]
        return m
