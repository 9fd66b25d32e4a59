"""Formal property helpers: the ``lib.stream`` rules as Amaranth ``Assert`` (for a block's outputs) or ``Assume``
(for its inputs), and the harness that puts a block under its properties for SymbiYosys.

A block states its properties next to its code, in a function ``formal_properties(m, dut)`` of its file;
:func:`harness` builds a top with the block, those properties, every input of the block left free (the solver
chooses them each cycle, within the assumptions) and the reset held low (the registers start at their
initial values). ``paro formal`` (``paro.flows.formal``) proves them.

Stream rules (the ``amaranth.lib.stream`` contract): once ``valid`` is high without ``ready``, the next cycle
still has ``valid`` high and the same ``payload``, unless the block was told to drop it (``unless``: a start
or clear that abandons the beat, stated where it applies).
"""

import weakref

from amaranth import Const, Module, ResetSignal, Signal, Value
from amaranth.hdl import Assert, Assume
from amaranth.lib.wiring import In

__all__ = ["past", "held", "stream_held", "free_constant", "harness"]

#: The free constants of each harness module (inputs of the top that the solver picks once).
_FREE = weakref.WeakKeyDictionary()


def past(m, value, name):
    """``value`` one cycle ago (0 in the first cycle)."""
    reg = Signal(len(value), name=f"past_{name}")
    m.d.sync += reg.eq(value)
    return reg


def held(m, valid, ready, payload, name, unless=0, assume=False):
    """A valid/ready handshake's rule: once ``valid`` waits without ``ready``, the next cycle keeps ``valid``
    and ``payload`` (a value), unless ``unless``. Asserted for an output, assumed for an input."""
    stalled = past(m, valid & ~ready, f"{name}_stalled")
    before = past(m, payload, f"{name}_payload")
    check = Assume if assume else Assert
    with m.If(stalled & ~Value.cast(unless).bool()):
        m.d.comb += [check(valid, f"{name}: valid held until ready"),
                     check(payload == before, f"{name}: payload held until ready")]


def stream_held(m, port, name, unless=0, assume=False):
    """:func:`held` on a ``lib.stream`` interface."""
    held(m, port.valid, port.ready, Value.cast(port.payload), name, unless, assume)


def free_constant(m, shape, name):
    """A value the solver picks in the first cycle and keeps (for "any column", "any address" properties)."""
    value = Signal(shape, name=name)
    _FREE.setdefault(m, []).append(value)
    started, before = past(m, Const(1), f"{name}_started"), past(m, value, name)   # (outside the If: every cycle)
    with m.If(started):
        m.d.comb += Assume(value == before)
    return value


def harness(dut, properties):
    """A module with ``dut`` and its ``properties(m, dut)``, reset low; returns ``(module, free ports)``."""
    m = Module()
    m.submodules.dut = dut
    properties(m, dut)
    m.d.comb += Assume(~ResetSignal())
    ports = [value for _, member, value in dut.signature.flatten(dut) if member.flow == In]
    return m, [p.as_value() if hasattr(p, "as_value") else p for p in ports] + _FREE.pop(m, [])
