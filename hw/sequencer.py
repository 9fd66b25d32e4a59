"""Layer sequencer: runs one engine start, a layer of heads from the descriptor list in memory.

Golden twin: :func:`paro.sw.golden.layer_sequencer` (the order of descriptor checks and head runs, and where
an error stops it).

States: ``IDLE`` -(``start``)-> ``clear`` for one cycle (the register file zeroes the totals), ``busy`` and
``done`` low. If the list itself is illegal (``list_error`` of the :class:`~.descriptor.DescriptorUnit`:
``N_HEADS`` out of range, ``DESC_ADDR`` misaligned) it stops at once with code 1. Otherwise:

* **Check pass**, per head ``h``: ``CHECK_READ`` wants descriptor ``h`` (``meta``, ``WANT_DESC``, served by
  the :class:`~.fetcher.Fetcher`); ``CHECK_WAIT`` waits :data:`~.descriptor.CHECK_LATENCY` cycles and
  samples the descriptor unit's ``error``. A refused descriptor ends the start (``error``, ``error_code``,
  ``error_head``): no head has run, nothing has been written.
* **Run**, per head ``h``: ``head_start`` (one cycle: the fetcher's cache and the per-head counters are
  reset; ``head_active`` is high from here until the head is stored), ``RUN_DESC`` wants descriptor ``h``
  again (the descriptor unit holds the last head checked), ``RUN_TABLE`` the head's block table, then
  ``run`` (one cycle) starts the :class:`~.controller.EngineController`, and ``RUN_ROWS`` waits until it is
  no longer ``head_busy``: the head's last output burst has been answered. ``head_store`` (one cycle, with
  ``head``) stores the head's counters; ``heads_done`` counts it.
* ``busy`` falls and ``done`` rises after the last head (or the error).

Nothing overlaps across heads: the next head's descriptor and table are read after the previous head's last
write (a few hundred cycles a head, against millions of compute cycles at real sizes).
"""

from amaranth import Module, Signal
from amaranth.hdl import Assert
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

from paro.sw.contract import DATA_BITS

from .component import EngineBlock
from .descriptor import CHECK_LATENCY, ERROR_BITS
from .formal import stream_held
from .kv_cache import WANT_DESC, WANT_TABLE, want_layout

__all__ = ["LayerSequencer", "formal_properties"]


class LayerSequencer(EngineBlock):
    def __init__(self, config):
        heads = config.max_heads
        super().__init__(config, {
            "start": In(1), "n_heads": In(DATA_BITS), "list_error": In(1), "desc_error": In(ERROR_BITS),
            "meta": Out(stream.Signature(want_layout(config))),
            "clear": Out(1), "busy": Out(1), "done": Out(1),
            "error": Out(1), "error_code": Out(ERROR_BITS), "error_head": Out(range(heads)),
            "head": Out(range(heads)), "head_start": Out(1), "head_active": Out(1), "head_store": Out(1),
            "heads_done": Out(range(heads + 1)),
            "run": Out(1), "head_busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        wait = Signal(range(CHECK_LATENCY + 1))
        last = self.head == self.n_heads - 1
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += self.clear.eq(1)
                    m.d.sync += [self.busy.eq(1), self.done.eq(0), self.error.eq(0), self.error_code.eq(0),
                                 self.error_head.eq(0), self.head.eq(0), self.heads_done.eq(0)]
                    m.next = "CHECK_LIST"
            with m.State("CHECK_LIST"):
                with m.If(self.list_error):
                    m.d.sync += [self.error.eq(1), self.error_code.eq(1)]
                    m.next = "FINISH"
                with m.Else():
                    m.next = "CHECK_READ"
            with m.State("CHECK_READ"):
                m.d.comb += [self.meta.valid.eq(1), self.meta.payload.kind.eq(WANT_DESC),
                             self.meta.payload.block.eq(self.head)]
                with m.If(self.meta.ready):
                    m.d.sync += wait.eq(0)
                    m.next = "CHECK_WAIT"
            with m.State("CHECK_WAIT"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == CHECK_LATENCY - 1):
                    with m.If(self.desc_error != 0):
                        m.d.sync += [self.error.eq(1), self.error_code.eq(self.desc_error),
                                     self.error_head.eq(self.head)]
                        m.next = "FINISH"
                    with m.Elif(last):
                        m.d.sync += self.head.eq(0)
                        m.next = "RUN_START"
                    with m.Else():
                        m.d.sync += self.head.eq(self.head + 1)
                        m.next = "CHECK_READ"
            with m.State("RUN_START"):
                m.d.comb += self.head_start.eq(1)
                m.d.sync += self.head_active.eq(1)
                m.next = "RUN_DESC"
            with m.State("RUN_DESC"):
                m.d.comb += [self.meta.valid.eq(1), self.meta.payload.kind.eq(WANT_DESC),
                             self.meta.payload.block.eq(self.head)]
                with m.If(self.meta.ready):
                    m.next = "RUN_TABLE"
            with m.State("RUN_TABLE"):
                m.d.comb += [self.meta.valid.eq(1), self.meta.payload.kind.eq(WANT_TABLE)]
                with m.If(self.meta.ready):
                    m.d.comb += self.run.eq(1)
                    m.next = "RUN_ROWS"
            with m.State("RUN_ROWS"):
                with m.If(~self.head_busy):
                    m.d.comb += self.head_store.eq(1)
                    m.d.sync += [self.head_active.eq(0), self.heads_done.eq(self.heads_done + 1)]
                    with m.If(last):
                        m.next = "FINISH"
                    with m.Else():
                        m.d.sync += self.head.eq(self.head + 1)
                        m.next = "RUN_START"
            with m.State("FINISH"):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                m.next = "IDLE"
        return m


def formal_properties(m, dut):
    """Checked by ``paro formal`` to a depth (the FSM's state and ``busy`` are separate registers, so induction
    does not close): ``meta`` keeps the stream rules; a start is taken only when idle (``START`` during a run is
    ignored), and ``done`` and ``busy`` are never high together."""
    stream_held(m, dut.meta, "meta")
    m.d.comb += [Assert(~dut.clear | ~dut.busy, "a start only when idle"),
                 Assert(~(dut.done & dut.busy), "done and busy exclusive")]
