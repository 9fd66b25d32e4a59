"""Word selection by a variable index, built for both Yosys and Verilator: ``value``'s ``width``-bit word ``index``.

Combinational, no state; the same function as ``value.word_select(index, width)`` for every index, past the
word count too (0 there). Why not ``word_select`` alone: Amaranth emits it as ``value >> (index * width)``,
which Verilator evaluates with a multi-word shift loop every cycle once ``value`` is wider than 64 bits.
Here the index's high bits pick a chunk of ``2**k`` words (the most that fit in 64 bits) through a tree of
2:1 multiplexers, one level per index bit, and its low ``k`` bits pick the word in the chunk by a shift:
in Verilator's model a few conditional moves and one machine-word shift; for Yosys the same number of 2:1
multiplexers as the wide shift (measured on the ``small`` engine: 46,223 LUTs against 46,248 for the wide
shift; a case multiplexer, ``Array``, cost 345 more; a tree down to single words ran the fast mode 9%
slower). A value of at most 64 bits keeps ``word_select``.
"""

from amaranth import Cat, Const, Mux, Value

__all__ = ["word_mux"]


def word_mux(value, index, width):
    """Word ``index`` (an Amaranth value or int) of ``value`` cut into ``len(value) // width`` words of
    ``width`` bits, lowest first; an unsigned value of ``width`` bits."""
    value = Value.cast(value)
    if width < 1 or len(value) % width:
        raise ValueError(f"word_mux needs a width dividing the value's {len(value)} bits, got {width}")
    if isinstance(index, int):
        return value.word_select(index, width) if (index + 1) * width <= len(value) else Const(0, width)
    index = Value.cast(index)
    if len(value) <= 64:
        return value.word_select(index, width)
    k = 0                                              # chunks of 2**k words, at most 64 bits
    while width << (k + 1) <= 64 and k < len(index):
        k += 1
    chunk = width << k
    padded = Cat(value, Const(0, -len(value) % chunk))
    level, bit = [padded.word_select(n, chunk) for n in range(len(padded) // chunk)], k
    while len(level) > 1 and bit < len(index):
        level = [Mux(index[bit], level[n + 1] if n + 1 < len(level) else Const(0, chunk), level[n])
                 for n in range(0, len(level), 2)]
        bit += 1
    selected = level[0] if bit == len(index) else Mux(index[bit:] != 0, 0, level[0])
    return selected.word_select(index[:k], width) if k else selected
