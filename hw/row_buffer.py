"""Row buffer: token rows (the engine's Q, K and V) in banks of narrow words, written a whole row a cycle and
read by several consumers at once, each a word of its own row; one write and one read port a bank, so every
bank is a plain block RAM. With one reader (V) it is one bank of whole rows.

Golden twin: :func:`paro.sw.golden.row_buffer` (what the readers get); the placement is
:func:`paro.sw.contract.row_buffer_place` and the geometry :func:`paro.sw.contract.row_buffer_geometry`:
``banks = readers`` memories of ``word_bytes = max(1, head_dim // readers)``-byte words; word ``j`` of row
``k`` in bank ``(k + j) % banks`` at address ``(k // banks) * words_per_row + j``.

Write (``wr_en``, ``wr_addr`` = row, ``wr_data`` = the whole row): at the clock edge, each of the row's
words into its bank (distinct banks: ``words_per_row <= banks``).

Read (``rd_en``, ``rd_row``, ``rd_word``): every bank reads address ``(rd_row // banks) * words_per_row +
rd_word`` at the clock edge; from the next cycle ``rd_data[n]`` is word ``rd_word`` of row ``rd_row + n`` for
every reader whose row lies in ``rd_row``'s aligned group of ``banks`` rows (the others read a word of the
wrong group: the engine never uses them). Read data holds while ``rd_en`` is low. Reads are not
transparent: a row written in the same cycle is read as it was.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from paro.errors import ParoError
from paro.sw.contract import row_buffer_geometry

from .component import ConfiguredComponent
from .operand_feed import row_layout, word_layout

__all__ = ["RowBuffer", "rotate"]


def rotate(values, amount):
    """``out[n] = values[(n + amount) % len(values)]``: a barrel rotation (``len(values)`` a power of two,
    ``amount`` a value of at least ``log2(len(values))`` bits), one 2:1 multiplexer stage per bit."""
    values = list(values)
    size = len(values)
    for bit in range((size - 1).bit_length()):
        values = [Mux(amount[bit], values[(n + (1 << bit)) % size], values[n]) for n in range(size)]
    return values


class RowBuffer(ConfiguredComponent):
    @classmethod
    def check(cls, config, rows, readers):
        if not isinstance(readers, int) or readers < 1 or readers & (readers - 1):
            raise ParoError(f"a row buffer's readers must be a power of two, got {readers}")
        if not isinstance(rows, int) or rows < readers:
            raise ParoError(f"a row buffer needs at least {readers} rows (one per reader), got {rows}")
        row_buffer_geometry(config, rows, readers)

    def __init__(self, config, rows, readers):
        self.geometry = geometry = row_buffer_geometry(config, rows, readers)
        super().__init__(config, {
            "wr_en": In(1), "wr_addr": In(range(rows)), "wr_data": In(row_layout(config)),
            # (a one-word row still has a one-bit rd_word, unused: no zero-width ports in the Verilog)
            "rd_en": In(1), "rd_row": In(range(rows)), "rd_word": In(range(max(2, geometry["words_per_row"]))),
            "rd_data": Out(data.ArrayLayout(word_layout(geometry), readers)),
        })

    def elaborate(self, platform):
        m = Module()
        banks, words = self.geometry["banks"], self.geometry["words_per_row"]
        word_bits = 8 * self.geometry["word_bytes"]
        bank_bits, word_index_bits = (banks - 1).bit_length(), (words - 1).bit_length()
        group_word = lambda row, word: ((row >> bank_bits) << word_index_bits) | word
        read_word = self.rd_word[:word_index_bits] if word_index_bits else 0
        row_words = [self.wr_data.as_value().word_select(j, word_bits) for j in range(words)]
        if banks == 1:                                      # one bank of whole rows: no rotation
            to_bank, rotation = row_words, None
        else:
            # The row's words rotated onto the banks: bank b takes word (b - row) % banks (if it is one of them).
            offset = Signal(range(banks))
            m.d.comb += offset.eq(-self.wr_addr)
            to_bank = rotate(row_words + [row_words[0]] * (banks - words), offset)
            rotation = Signal(range(banks))                 # of the read in flight: (rd_row + rd_word) % banks
            with m.If(self.rd_en):
                m.d.sync += rotation.eq(self.rd_row + read_word)
        read_data = []
        for b in range(banks):
            memory = Memory(shape=word_bits, depth=self.geometry["bank_entries"], init=[])
            m.submodules[f"bank{b}"] = memory
            write, read = memory.write_port(), memory.read_port()
            if banks == 1:
                m.d.comb += [write.en.eq(self.wr_en), write.addr.eq(self.wr_addr)]
            else:
                j = Signal(range(banks), name=f"word{b}")
                m.d.comb += [j.eq(b - self.wr_addr), write.en.eq(self.wr_en & (j < words)),
                             write.addr.eq(group_word(self.wr_addr, j[:word_index_bits] if word_index_bits else 0))]
            m.d.comb += [write.data.eq(to_bank[b]), read.en.eq(self.rd_en),
                         read.addr.eq(group_word(self.rd_row, read_word))]
            read_data.append(read.data)
        lanes = read_data if rotation is None else rotate(read_data, rotation)
        m.d.comb += [self.rd_data[n].as_value().eq(value) for n, value in enumerate(lanes)]
        return m
