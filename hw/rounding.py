"""Rounded right shift, the one rounding every block uses: ``round(value / 2**shift)`` with ties up.

Golden twin: :func:`paro.sw.golden.round_shift`. Combinational, no state. A constant ``shift`` gives
``(value + 2**(shift-1)) >> shift``. A variable ``shift`` (an unsigned value) is clamped to ``L``, the value's
width ``W`` if signed, ``W + 1`` if unsigned (from ``L`` on the result is 0 anyway: ``value + 2**(shift-1)``
lies in ``[0, 2**shift)``), and the half is ``2**L >> (L + 1 - shift)``, a right shift: the emitted Verilog
stays ``W + 3`` bits wide instead of the ``W + 2**len(shift)`` bits of ``1 << shift`` (which made Verilator
use multi-word arithmetic).
"""

from amaranth import Const, Mux, Value

__all__ = ["round_shift"]


def round_shift(value, shift):
    """``round(value / 2**shift)``, ties toward +infinity (an Amaranth expression of ``value``'s signedness)."""
    value = Value.cast(value)
    if isinstance(shift, int):
        if shift < 0:
            raise ValueError(f"round_shift needs a shift >= 0, got {shift}")
        return (value + ((1 << shift) >> 1)) >> shift if shift else value
    shift = Value.cast(shift)
    limit = len(value) + (not value.shape().signed)       # from here on the result is 0
    clamped = Mux(shift > limit, limit, shift) if (1 << len(shift)) - 1 > limit else shift
    half = Const(1 << limit, limit + 1) >> (limit + 1 - clamped).as_unsigned()
    return (value + half) >> clamped
