"""Word selection by a variable index as a case multiplexer: ``value``'s ``width``-bit word number ``index``.

Combinational, no state; the same function as ``value.word_select(index, width)`` for every index below the
word count. Why not ``word_select``: Amaranth emits it as ``value >> (index * width)``, which Verilator
evaluates with a multi-word shift loop every cycle once ``value`` is wider than 64 bits; the case
multiplexer of :class:`amaranth.hdl.Array` compiles to a switch that copies one word. An index at or past the
word count gives 0, as ``word_select`` does (the multiplexer has one zero word after the last word when the
index can reach past it: ``Array`` answers an index past its end with its last element). A value of at most
64 bits keeps ``word_select``: Verilator shifts one machine word without a branch, which beats a switch.
"""

from amaranth import Array, Const, Value

__all__ = ["word_mux"]


def word_mux(value, index, width):
    """Word ``index`` (an Amaranth value or int) of ``value`` cut into ``len(value) // width`` words of
    ``width`` bits, lowest first; an unsigned value of ``width`` bits."""
    value = Value.cast(value)
    if width < 1 or len(value) % width:
        raise ValueError(f"word_mux needs a width dividing the value's {len(value)} bits, got {width}")
    words = [value.word_select(n, width) for n in range(len(value) // width)]
    if len(value) <= 64 and not isinstance(index, int):
        return value.word_select(index, width)
    if isinstance(index, int):
        return words[index] if index < len(words) else Const(0, width)
    index = Value.cast(index)
    if 1 << len(index) > len(words):
        words.append(Const(0, width))
    return words[0] if len(words) == 1 else Array(words)[index]
