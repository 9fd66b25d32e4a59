"""The attention engine's register and memory contract: the one owner of the register map, the descriptor
layout, every field's width and legal range, the memory layout of a layer, the layer file format and the
checks.

The hardware (:mod:`paro.hw.registers`, :mod:`paro.hw.descriptor`, :mod:`paro.hw.block_table`,
:mod:`paro.hw.scheduler`), the layer builder (:mod:`paro.sw.program`), the benches and ``paro simulate`` all
import this module; none of them restates an address, a width, a range or a layout.

One start runs a **layer**: ``N_HEADS`` descriptors at ``DESC_ADDR`` in memory, one per head. The engine
first reads and checks every descriptor (nothing is computed or written if one is bad: ``STATUS`` error,
``ERROR`` = code | head << 8), then runs the heads in order.

Registers (AXI4-Lite, byte address = word address x 4, 32-bit data; only aligned full-word accesses act,
others answer ``SLVERR``; reads of unmapped words return 0; while ``STATUS`` busy, writes are ignored, ``START``
included, so a run always uses the ``DESC_ADDR`` and ``N_HEADS`` it started with):

================ ======= ====== =====================================================================
register         address access legal values / meaning
================ ======= ====== =====================================================================
``START``        0x00    w      write 1: run the layer
``DESC_ADDR``    0x01    w      byte address of the descriptor list, a multiple of ``REGION_ALIGN``
``N_HEADS``      0x02    w      descriptors in the list, ``[1, max_heads]``
``STATUS``       0x10    r      bit 0 busy, bit 1 done, bit 2 error (a descriptor was refused)
``CYCLES``       0x11    r      busy cycles of the last start (descriptor checks included)
``ARRAY_BEATS``  0x12    r      input beats the array took
``STALL_CYCLES`` 0x13    r      ``CYCLES - ARRAY_BEATS``
``KEPT8``        0x14    r      8-bit blocks computed (pass A)
``KEPT4``        0x15    r      4-bit and LUT-path blocks computed (pass A: QK^T at 4 bits)
``SKIPPED``      0x16    r      0-bit blocks skipped (pass A)
``BYTES_READ``   0x17    r      bytes the AXI4 master read (descriptors, tables, bitmap rows, Q, K, V)
``BYTES_WRITTEN``0x18    r      bytes the AXI4 master wrote (output codes)
``ERROR``        0x19    r      bits 0-7 the first refused descriptor's :data:`ERRORS` code, bits 8-31 its head
``HEADS_DONE``   0x1A    r      heads finished in the last start
``KEPT2``        0x1B    r      2-bit blocks computed (pass A)
``SPEC_BUSY``    0x1C    r      cycles the speculation path worked (pooling K, classing rows)
``SPEC_WAIT``    0x1D    r      cycles the controller waited for a row's speculation (its exposed cost)
================ ======= ====== =====================================================================

Per-head counters, region 1 (``HEAD_COUNTERS``): word ``head * COUNTER_STRIDE + n`` (``COUNTER_STRIDE`` = 16,
the next power of two above the 11 counters) holds counter ``COUNTERS[n]`` of that
head (from reading its descriptor to its last output write; ``STALL_CYCLES`` included), written when the
head finishes.

Descriptor (``DESCRIPTOR_WORDS`` little-endian 32-bit words; list entry ``h`` at ``DESC_ADDR + h *
descriptor_stride``): word ``n`` is ``DESCRIPTOR[n]``; word 15 is reserved (write 0).

================ ==== =========================================================================================
field            word legal values (checked by the engine before any head runs, and by :func:`check_layer`)
================ ==== =========================================================================================
``Q_ADDR``       0    byte address of Q, ``int8 [N_BLOCKS * B, head_dim]`` row-major
``K_ADDR``       1    byte address of K (smoothed), same layout
``V_ADDR``       2    byte address of V, same layout
``O_ADDR``       3    byte address of the output codes, ``int16 [N_BLOCKS * B, head_dim]`` little-endian
``BITMAP_ADDR``  4    byte address of the bitmap: row ``i`` at ``+ i * bitmap_stride``, byte ``j`` = bits of
                      block ``(i, j)`` (a value of ``config.bitwidths``); rows padded to whole lines
``TABLE_ADDR``   5    byte address of the block table: block ``j``'s record at ``+ 8 j``, four ``uint16``
                      ``CQ, CK, CV8, CV4`` (:data:`TABLE_FIELDS`), each in ``[1, 2**15 - 1]`` (a 2-bit
                      block's V multiplier is ``5 x CV4``, made by the engine)
``N_TOKENS``     6    real tokens, ``(N_BLOCKS - 1) * B < N_TOKENS <= N_BLOCKS * B``
``N_BLOCKS``     7    query (= key) blocks of the head, ``[1, max_blocks]``
``SCORE_SHIFT``  8    ``[MIN_SCORE_SHIFT, 63]``: right shift of the score scaling
``FINAL_SHIFT``  9    ``[1, 127]``: right shift of the output stage
``ROW_FIRST``    10   first query block to compute, ``ROW_FIRST + ROW_COUNT <= N_BLOCKS``
``ROW_COUNT``    11   query blocks to compute (only their codes are written), ``>= 1``
``SPEC``         12   0: run the bitmap as it is; 1: SimPicker's block speculation (a build with ``spec_lanes``):
                      per query block, blocks it classes negligible are skipped too (docs/simpicker.md); 2: as
                      1, and blocks it classes unimportant run at 4 bits (8-bit blocks; 4 and 2 stay); 3: as 1,
                      and unimportant blocks take the LUT path (a build with ``lut_path``: QK^T at 4 bits, PV
                      through the LUT multiplier)
``SPEC_IMPORTANT`` 13 with ``SPEC`` 1: important mass fraction in units of ``2**-SPEC_FRAC_BITS``,
                      ``[1, 2**SPEC_FRAC_BITS]``; else 0
``SPEC_NEGLIGIBLE`` 14 with ``SPEC`` 1: negligible mass fraction, ``[0, SPEC_IMPORTANT - 1]``; else 0
================ ==== =========================================================================================

Every address is a multiple of ``REGION_ALIGN``; every region lies in the ``AXI_ADDRESS_BITS`` address space;
the output region overlaps none of the head's inputs nor the descriptor list. Memory is read and written in
INCR bursts of at most ``MAX_BURST_BEATS`` beats that never cross a ``BURST_BOUNDARY``, in whole **lines**
(``head_dim`` bytes, the width of one token row).
"""

import dataclasses
import io
import json

import numpy as np

from paro.config import SCORE_WIDTH, AcceleratorConfig
from paro.errors import ParoError
from paro.files import atomic_write_bytes, read_npz

__all__ = ["Register", "Field", "REGISTERS", "DESCRIPTOR", "DESCRIPTOR_WORDS", "CONTROL_REGISTERS", "COUNTERS",
           "COUNTER_STRIDE", "HEAD_COUNTERS_REGION", "ADDRESS_FIELDS", "TABLE_FIELDS", "ERRORS", "STATUS_BITS",
           "ADDRESS_BITS", "OFFSET_BITS", "DATA_BITS", "AXIL_ADDRESS_BITS", "RESP_OKAY", "RESP_SLVERR",
           "MIN_SCORE_SHIFT", "SPEC_FRAC_BITS", "SPEC_OFF", "SPEC_SKIP_ONLY", "SPEC_LOW_BITS",
           "SPEC_LUT_PATH", "LUT_BLOCK", "block_counters",
           "AXI_ADDRESS_BITS", "MAX_BURST_BEATS", "BURST_BOUNDARY", "REGION_ALIGN",
           "OUTPUT_CODE_BYTES", "TABLE_RECORD_BYTES",
           "EngineProgram", "EngineLayer", "check_engine_config", "engine_buffers", "engine_row_buffer",
           "row_buffer_geometry", "row_buffer_place", "score_buffer_geometry", "score_buffer_place", "check_kept_keys",
           "descriptor_stride", "descriptor_lines", "bitmap_stride", "region_bytes", "memory_map",
           "layer_memory_map", "descriptor_words", "list_problem", "descriptor_problem", "head_counter_address",
           "table_bytes", "layer_memory", "descriptor_fields", "low_bit_blocks", "DESCRIPTOR_DEFAULTS", "layer_writes",
           "check_program", "check_layer", "save_layer", "load_layer"]

ADDRESS_BITS = 24
OFFSET_BITS = 20
DATA_BITS = 32
#: AXI4 memory master: byte addresses, burst limits, region alignment, bytes of one output code.
AXI_ADDRESS_BITS = 32
MAX_BURST_BEATS = 256
BURST_BOUNDARY = 4096
REGION_ALIGN = 4096
OUTPUT_CODE_BYTES = 2
#: AXI4-Lite byte addresses of the register slave; responses it gives.
AXIL_ADDRESS_BITS = ADDRESS_BITS + 2
RESP_OKAY, RESP_SLVERR = 0, 2
#: Smallest score shift the contract allows (scores saturate at SCORE_LIMIT: a smaller shift saturates more).
MIN_SCORE_SHIFT = 12
#: Fractional bits of SimPicker's speculation thresholds (``SPEC_IMPORTANT``, ``SPEC_NEGLIGIBLE``).
SPEC_FRAC_BITS = 16
#: ``SPEC`` values: no speculation; negligible blocks skipped (unimportant ones keep their bits); negligible
#: blocks skipped and unimportant ones at 4 bits (the low-bit path, :func:`low_bit_blocks`); negligible blocks
#: skipped and unimportant ones on the LUT path (code ``LUT_BLOCK`` in the golden model's bitmaps).
SPEC_OFF, SPEC_SKIP_ONLY, SPEC_LOW_BITS, SPEC_LUT_PATH = 0, 1, 2, 3
#: A block's code beside the bitwidths in a speculated bitmap and the scheduler's walk: SimPicker's LUT path
#: (QK^T with K at 4 bits, PV with FP numerators through the LUT multiplier).
LUT_BLOCK = 1


def block_counters(bitmap):
    """What the block counters ``KEPT8``, ``KEPT4``, ``KEPT2`` and ``SKIPPED`` count for the blocks of
    ``bitmap`` the engine walks (a speculated bitmap: its codes); ``KEPT4`` counts the 4-bit and the
    ``LUT_BLOCK`` blocks, whose QK^T runs at 4 bits."""
    bitmap = np.asarray(bitmap)
    count = lambda *codes: int(np.isin(bitmap, codes).sum())          # noqa: E731
    return {"KEPT8": count(8), "KEPT4": count(4, LUT_BLOCK), "KEPT2": count(2), "SKIPPED": count(0)}


def low_bit_blocks(bits):
    """Blocks at PARO's 4-bit mode, the low-bit path of SimPicker's unimportant blocks (``SPEC_LOW_BITS``):
    ``min(bits, 4)`` of every computed block (2-bit blocks stay at 2; 0 stays 0)."""
    bits = np.asarray(bits)
    return np.where(bits > 4, 4, bits).astype(bits.dtype)


@dataclasses.dataclass(frozen=True)
class Register:
    """One AXI4-Lite register: ``access`` is ``"w"`` (control, written before a start) or ``"r"`` (status)."""
    name: str
    address: int
    access: str
    doc: str

    def width(self, config):
        """Bits the hardware keeps."""
        return {"START": 1, "STATUS": len(STATUS_BITS)}.get(self.name, DATA_BITS)


REGISTERS = {r.name: r for r in (
    Register("START", 0x00, "w", "write 1 to run the layer"),
    Register("DESC_ADDR", 0x01, "w", "byte address of the descriptor list"),
    Register("N_HEADS", 0x02, "w", "descriptors in the list"),
    Register("STATUS", 0x10, "r", "bit 0 busy, bit 1 done, bit 2 error"),
    Register("CYCLES", 0x11, "r", "busy cycles of the last start"),
    Register("ARRAY_BEATS", 0x12, "r", "input beats the array took"),
    Register("STALL_CYCLES", 0x13, "r", "busy cycles in which the array took no beat"),
    Register("KEPT8", 0x14, "r", "8-bit blocks computed"),
    Register("KEPT4", 0x15, "r", "4-bit and LUT-path blocks computed"),
    Register("SKIPPED", 0x16, "r", "0-bit blocks skipped"),
    Register("BYTES_READ", 0x17, "r", "bytes read from memory"),
    Register("BYTES_WRITTEN", 0x18, "r", "bytes written to memory"),
    Register("ERROR", 0x19, "r", "code | head << 8 of the first refused descriptor"),
    Register("HEADS_DONE", 0x1A, "r", "heads finished in the last start"),
    Register("KEPT2", 0x1B, "r", "2-bit blocks computed"),
    Register("SPEC_BUSY", 0x1C, "r", "cycles the speculation path worked"),
    Register("SPEC_WAIT", 0x1D, "r", "cycles the controller waited for speculation"),
)}
#: Registers written before START, in the order they are written.
CONTROL_REGISTERS = ("DESC_ADDR", "N_HEADS")
#: Counters (totals in registers, per head in region HEAD_COUNTERS_REGION), read after done.
COUNTERS = ("CYCLES", "ARRAY_BEATS", "STALL_CYCLES", "KEPT8", "KEPT4", "KEPT2", "SKIPPED", "BYTES_READ",
            "BYTES_WRITTEN", "SPEC_BUSY", "SPEC_WAIT")
#: Words per head in region HEAD_COUNTERS_REGION: the counters, padded to a power of two.
COUNTER_STRIDE = 1 << (len(COUNTERS) - 1).bit_length()
HEAD_COUNTERS_REGION = 1
#: STATUS bits, low to high.
STATUS_BITS = ("busy", "done", "error")


def head_counter_address(head, name):
    """Word address of counter ``name`` of ``head`` (region ``HEAD_COUNTERS_REGION``)."""
    return (HEAD_COUNTERS_REGION << OFFSET_BITS) | head * COUNTER_STRIDE | COUNTERS.index(name)


@dataclasses.dataclass(frozen=True)
class Field:
    """One word of a head's descriptor."""
    name: str
    word: int
    doc: str

    def width(self, config):
        """Bits the hardware keeps after the descriptor passed its checks."""
        return {"N_TOKENS": config.max_seq_len.bit_length(), "N_BLOCKS": config.max_blocks.bit_length(),
                "ROW_FIRST": config.max_blocks.bit_length(), "ROW_COUNT": config.max_blocks.bit_length(),
                "SCORE_SHIFT": 6, "FINAL_SHIFT": 7, "SPEC": 2, "SPEC_IMPORTANT": SPEC_FRAC_BITS + 1,
                "SPEC_NEGLIGIBLE": SPEC_FRAC_BITS + 1}.get(self.name, DATA_BITS)


DESCRIPTOR = tuple(Field(name, word, doc) for word, (name, doc) in enumerate((
    ("Q_ADDR", "byte address of Q"), ("K_ADDR", "byte address of K"), ("V_ADDR", "byte address of V"),
    ("O_ADDR", "byte address of the output codes"), ("BITMAP_ADDR", "byte address of the bitmap rows"),
    ("TABLE_ADDR", "byte address of the block table"), ("N_TOKENS", "real tokens of the head"),
    ("N_BLOCKS", "query (= key) blocks of the head"), ("SCORE_SHIFT", "right shift of the score scaling"),
    ("FINAL_SHIFT", "right shift of the output stage"), ("ROW_FIRST", "first query block to compute"),
    ("ROW_COUNT", "query blocks to compute"),
    ("SPEC", "0: the bitmap as it is, 1: block speculation, 2: and unimportant blocks at 4 bits, 3: or on the "
             "LUT path"),
    ("SPEC_IMPORTANT", "speculation's important mass fraction"),
    ("SPEC_NEGLIGIBLE", "speculation's negligible mass fraction"))))
DESCRIPTOR_WORDS = 16
#: Fields a descriptor may leave out (speculation off).
DESCRIPTOR_DEFAULTS = {"SPEC": 0, "SPEC_IMPORTANT": 0, "SPEC_NEGLIGIBLE": 0}
ADDRESS_FIELDS = ("Q_ADDR", "K_ADDR", "V_ADDR", "O_ADDR", "BITMAP_ADDR", "TABLE_ADDR")
#: The block table's record: four 16-bit entries per key block, in this order.
TABLE_FIELDS = ("CQ", "CK", "CV8", "CV4")
TABLE_RECORD_BYTES = 2 * len(TABLE_FIELDS)
#: Table entries are integer mantissas of 15 bits (``sw.golden.int_multipliers``), never 0.
TABLE_RANGE = (1, (1 << 15) - 1)

#: Codes of a refused descriptor (``ERROR`` bits 0-7), in the order the engine checks them; 0 is none.
ERRORS = {1: "LIST", 2: "N_BLOCKS", 3: "N_TOKENS", 4: "ROWS", 5: "SCORE_SHIFT", 6: "FINAL_SHIFT",
          7: "ALIGN", 8: "SPACE", 9: "OVERLAP", 10: "SPEC"}


def _lines(config, nbytes):
    return -(-nbytes // config.head_dim)


def descriptor_lines(config):
    """Lines (``head_dim`` bytes) of one descriptor."""
    return _lines(config, 4 * DESCRIPTOR_WORDS)


def descriptor_stride(config):
    """Bytes from one descriptor of the list to the next: the descriptor in whole lines."""
    return descriptor_lines(config) * config.head_dim


def bitmap_stride(config, n_blocks):
    """Bytes from one bitmap row to the next: ``n_blocks`` bytes in whole lines."""
    return _lines(config, n_blocks) * config.head_dim


def table_bytes(config, n_blocks):
    """Bytes of a head's block table: ``n_blocks`` records in whole lines."""
    return _lines(config, TABLE_RECORD_BYTES * n_blocks) * config.head_dim


def region_bytes(config, name, n_blocks):
    """Bytes of the memory region at address field ``name`` for a head of ``n_blocks`` blocks."""
    if name == "BITMAP_ADDR":
        return n_blocks * bitmap_stride(config, n_blocks)
    if name == "TABLE_ADDR":
        return table_bytes(config, n_blocks)
    per_value = OUTPUT_CODE_BYTES if name == "O_ADDR" else 1
    return n_blocks * config.block_size * config.head_dim * per_value


def _align(value):
    return -(-value // REGION_ALIGN) * REGION_ALIGN


def memory_map(config, n_blocks, base=REGION_ALIGN):
    """Default addresses of one head's regions, one after the other from ``base``, each on a
    ``REGION_ALIGN`` boundary."""
    addresses = {}
    for name in ADDRESS_FIELDS:
        addresses[name] = base
        base += _align(region_bytes(config, name, n_blocks))
    return addresses


def layer_memory_map(config, blocks_per_head, base=REGION_ALIGN):
    """Default layout of a layer: ``(DESC_ADDR, [per head addresses])``: the descriptor list at ``base``,
    then each head's regions."""
    desc_addr = base
    base += _align(len(blocks_per_head) * descriptor_stride(config))
    heads = []
    for n_blocks in blocks_per_head:
        heads.append(memory_map(config, n_blocks, base))
        base = heads[-1]["TABLE_ADDR"] + _align(region_bytes(config, "TABLE_ADDR", n_blocks))
    return desc_addr, heads


def row_buffer_geometry(config, rows, readers):
    """Banks of a token-row buffer of ``rows`` rows that ``readers`` consumers read at once (each a word of its
    own row): ``{"banks", "word_bytes", "words_per_row", "bank_entries"}``. A row is ``words_per_row`` words
    of ``word_bytes = max(1, head_dim // readers)`` bytes; word ``j`` of row ``k`` lives in bank
    ``(k + j) % banks`` at address ``(k // banks) * words_per_row + j``, with ``banks = readers``. A whole
    row is written in one cycle (its words fall in distinct banks), and ``readers`` rows of one aligned group
    of ``banks`` rows read the same word index in one cycle (distinct banks too): one write and one read port
    a bank, narrow words, so each bank maps onto block RAM."""
    d = config.head_dim
    word_bytes = max(1, d // readers)
    words = d // word_bytes
    if rows % readers:
        raise ParoError(f"a row buffer of {rows} rows cannot have {readers} banks (not a multiple)")
    return {"banks": readers, "word_bytes": word_bytes, "words_per_row": words,
            "bank_entries": rows // readers * words}


def engine_row_buffer(config, name):
    """The engine's ``k_buffer``, ``q_buffer`` or ``v_buffer``: :func:`row_buffer_geometry` plus its ``rows``
    and ``readers`` (K: the cache's slots, read by ``engine_lanes`` lanes; Q: two query blocks, read by
    ``rows`` lanes; V: the cache's slots, read a row at a time). The one place these pairs are chosen."""
    B = config.block_size
    rows, readers = {"k_buffer": (config.kv_cache_blocks * B, config.engine_lanes), "q_buffer": (2 * B, config.rows),
                     "v_buffer": (config.kv_cache_blocks * B, 1)}[name]
    return {"rows": rows, "readers": readers, **row_buffer_geometry(config, rows, readers)}


def row_buffer_place(row, word, geometry):
    """``(bank, address)`` of word ``word`` of row ``row`` in a buffer of :func:`row_buffer_geometry`."""
    banks, words = geometry["banks"], geometry["words_per_row"]
    return (row + word) % banks, (row // banks) * words + word


def score_buffer_geometry(config):
    """Banks of the score buffer: ``{"banks", "bank_entries"}``. The score of query ``q`` (of the block) and
    kept key ``k`` (of the row) lives in bank ``q % banks`` at address ``(q // banks) * max_kept_keys + k``,
    ``banks = max(rows, engine_lanes)``: pass A writes ``rows`` consecutive queries a cycle (an aligned group),
    pass B reads ``engine_lanes`` consecutive queries, both in distinct banks: one write and one read port a
    bank."""
    banks = max(config.rows, config.engine_lanes)
    return {"banks": banks, "bank_entries": config.block_size // banks * config.max_kept_keys}


def score_buffer_place(query, key, config):
    """``(bank, address)`` of the score of ``query`` and kept key ``key`` (:func:`score_buffer_geometry`)."""
    banks = score_buffer_geometry(config)["banks"]
    return query % banks, (query // banks) * config.max_kept_keys + key


def engine_buffers(config):
    """Every on-chip buffer of the engine: name -> ``{"entries", "width", "bits", "banks"}`` (the hardware
    sizes its memories from this; the params JSON reports it). ``entries`` and ``width`` are the logical
    rows; banked buffers split them into ``banks`` memories of one write and one read port each
    (:func:`row_buffer_geometry`, :func:`score_buffer_geometry`)."""
    B, d, R, line = config.block_size, config.head_dim, config.rows, 8 * config.head_dim
    row_buffers = {name: engine_row_buffer(config, name) for name in ("k_buffer", "v_buffer", "q_buffer")}
    sizes = {
        **{name: (geometry["rows"], line) for name, geometry in row_buffers.items()},
        "score_buffer": (B * config.max_kept_keys, SCORE_WIDTH),
        "segment_buffer": (config.max_kept_blocks, B * SCORE_WIDTH),
        "output_accumulator": (B * (d // R), R * config.acc_out_width),
        "bitmap_rows": (2 * _lines(config, config.max_blocks), line),
        "block_table": (_lines(config, TABLE_RECORD_BYTES * config.max_blocks), line),
        "head_counters": (config.max_heads, len(COUNTERS) * DATA_BITS),
    }
    banks = {**{name: geometry["banks"] for name, geometry in row_buffers.items()},
             "score_buffer": score_buffer_geometry(config)["banks"]}
    return {name: {"entries": entries, "width": width, "bits": entries * width, "banks": banks.get(name, 1)}
            for name, (entries, width) in sizes.items()}


def check_engine_config(config):
    """Raise unless the attention engine can be built for ``config``."""
    if 4 not in config.bitwidths:
        raise ParoError(f"the engine computes bitwidths {{0, 4, 8}} or {{0, 2, 4, 8}} (a 2-bit block's V multiplier "
                        f"comes from the 4-bit one); the configuration uses {list(config.bitwidths)}")
    if not 16 * config.rows <= config.axi_data_bits <= 8 * config.head_dim:
        raise ParoError(f"axi_data_bits {config.axi_data_bits} must be in [16 x rows, 8 x head_dim] = "
                        f"[{16 * config.rows}, {8 * config.head_dim}] (an output beat fits a data beat, a data "
                        f"beat fits a token row)")


def descriptor_fields(fields):
    """Every :data:`DESCRIPTOR` field of ``fields`` (name -> value), those of :data:`DESCRIPTOR_DEFAULTS` it
    leaves out at their defaults."""
    return {**DESCRIPTOR_DEFAULTS, **fields}


def descriptor_words(fields):
    """The ``DESCRIPTOR_WORDS`` words of a descriptor with ``fields`` (name -> value; reserved words 0)."""
    fields = descriptor_fields(fields)
    return [int(fields[f.name]) & 0xFFFFFFFF for f in DESCRIPTOR] + [0] * (DESCRIPTOR_WORDS - len(DESCRIPTOR))


def _range_message(what, value, low, high, config):
    hint = ""
    if what == "N_BLOCKS" and value > high:
        hint = (f" (this engine: max_seq_len {config.max_seq_len} / block_size {config.block_size}); build "
                f"and calibrate with --max-seq-len >= {value * config.block_size}")
    return f"{what} = {value} is outside [{low}, {high}]{hint}"


def list_problem(config, desc_addr, n_heads):
    """``(1, message)`` if the descriptor list itself is illegal (``N_HEADS`` out of range, ``DESC_ADDR`` not
    aligned, the list past the address space), else ``(0, None)``. The engine checks it before reading any
    descriptor."""
    if not 1 <= n_heads <= config.max_heads:
        return 1, f"N_HEADS = {n_heads} is outside [1, {config.max_heads}] (max_heads of this build)"
    if desc_addr % REGION_ALIGN or desc_addr + n_heads * descriptor_stride(config) > 1 << AXI_ADDRESS_BITS:
        return 1, (f"DESC_ADDR = {desc_addr:#x}: the descriptor list must start on a multiple of {REGION_ALIGN} "
                   f"bytes and end within the {AXI_ADDRESS_BITS}-bit address space")
    return 0, None


def descriptor_problem(config, fields, desc_addr, n_heads):
    """The first rule (in the engine's order) that a descriptor in a list of ``n_heads`` at ``desc_addr``
    breaks: ``(code, message)`` with a code of :data:`ERRORS`, or ``(0, None)``. ``fields`` maps every
    :data:`DESCRIPTOR` name to its 32-bit word. The engine checks exactly these rules, in this order
    (:func:`list_problem` first, then :class:`paro.hw.descriptor.DescriptorUnit`)."""
    code, message = list_problem(config, desc_addr, n_heads)
    if code:
        return code, message
    fields = descriptor_fields(fields)
    B, space = config.block_size, 1 << AXI_ADDRESS_BITS
    list_end = desc_addr + n_heads * descriptor_stride(config)
    blocks, tokens = fields["N_BLOCKS"], fields["N_TOKENS"]
    if not 1 <= blocks <= config.max_blocks:
        return 2, _range_message("N_BLOCKS", blocks, 1, config.max_blocks, config)
    if not (blocks - 1) * B < tokens <= blocks * B:
        return 3, (f"N_TOKENS = {tokens} does not fall in the last of N_BLOCKS = {blocks} blocks of {B} tokens"
                   + (" (a head with zero tokens)" if tokens == 0 else ""))
    first, count = fields["ROW_FIRST"], fields["ROW_COUNT"]
    if count < 1 or first + count > blocks:
        return 4, f"ROW_FIRST = {first} and ROW_COUNT = {count} do not select rows within N_BLOCKS = {blocks}"
    if not MIN_SCORE_SHIFT <= fields["SCORE_SHIFT"] <= 63:
        return 5, _range_message("SCORE_SHIFT", fields["SCORE_SHIFT"], MIN_SCORE_SHIFT, 63, config)
    if not 1 <= fields["FINAL_SHIFT"] <= 127:
        return 6, _range_message("FINAL_SHIFT", fields["FINAL_SHIFT"], 1, 127, config)
    for name in ADDRESS_FIELDS:
        if fields[name] % REGION_ALIGN:
            return 7, (f"{name} = {fields[name]:#x} is not a multiple of {REGION_ALIGN} bytes; align the region "
                       f"to {REGION_ALIGN}")
    spans = {name: (fields[name], fields[name] + region_bytes(config, name, blocks)) for name in ADDRESS_FIELDS}
    for name, (low, high) in spans.items():
        if high > space:
            return 8, (f"{name} = {low:#x}: the region's {high - low} bytes run past the {AXI_ADDRESS_BITS}-bit "
                       f"address space")
    out_low, out_high = spans.pop("O_ADDR")
    spans["DESC_ADDR"] = (desc_addr, list_end)
    for name, (low, high) in spans.items():
        if low < out_high and out_low < high:
            return 9, (f"the output region [{out_low:#x}, {out_high:#x}) overlaps {name}'s [{low:#x}, {high:#x}); "
                       f"move O_ADDR")
    spec, important, negligible = fields["SPEC"], fields["SPEC_IMPORTANT"], fields["SPEC_NEGLIGIBLE"]
    if spec > SPEC_LUT_PATH:
        return 10, (f"SPEC = {spec} is not 0 (the bitmap as it is), 1 (block speculation), 2 (block speculation, "
                    f"unimportant blocks at 4 bits) or 3 (unimportant blocks on the LUT path)")
    if spec and not config.spec_lanes:
        return 10, (f"SPEC = {spec} asks for block speculation, which this engine was built without; build with "
                    f"--spec-lanes N (a power of two <= head_dim)")
    if spec == SPEC_LUT_PATH and not config.lut_path:
        return 10, ("SPEC = 3 asks for the LUT path, which this engine was built without; build with --lut-path "
                    "(or pass SPEC 1 or 2)")
    if spec and not 0 <= negligible < important <= 1 << SPEC_FRAC_BITS:
        return 10, (f"SPEC_IMPORTANT = {important} and SPEC_NEGLIGIBLE = {negligible} must satisfy 0 <= negligible "
                    f"< important <= {1 << SPEC_FRAC_BITS} (mass fractions in units of 2**-{SPEC_FRAC_BITS})")
    if not spec and (important or negligible):
        return 10, "SPEC_IMPORTANT and SPEC_NEGLIGIBLE must be 0 without speculation (SPEC = 0)"
    return 0, None


def check_kept_keys(config, bitmap):
    """Raise a one-line :class:`ParoError` naming the first query-block row of ``bitmap`` that keeps more
    keys than the score buffer holds (``max_kept_keys``)."""
    kept = np.count_nonzero(np.asarray(bitmap), axis=1) * config.block_size
    over = np.flatnonzero(kept > config.max_kept_keys)
    if over.size:
        row = int(over[0])
        raise ParoError(f"bitmap row {row} keeps {kept[row] // config.block_size} blocks ({kept[row]} keys), "
                        f"more than the score buffer holds (max_kept_keys {config.max_kept_keys}); build with "
                        f"--max-kept-keys >= {int(kept.max())}")


@dataclasses.dataclass
class EngineProgram:
    """What software hands the engine for one head, and the output codes that must come back."""
    descriptor: dict         # DESCRIPTOR names -> int
    tables: dict             # TABLE_FIELDS names -> int array, one entry per block
    bitmap: np.ndarray       # uint8 [n_blocks, n_blocks]
    q8: np.ndarray           # int64 [n_blocks * block_size, head_dim]
    k8: np.ndarray
    v8: np.ndarray
    codes: np.ndarray        # expected output codes [n_blocks * block_size, head_dim]
    out_exp: int             # dequantise: codes * 2**-out_exp
    speculated: np.ndarray = None   # with SPEC: the bitmap after the engine's speculation (what it computes)

    @property
    def computed_bitmap(self):
        """The blocks the engine computes: the bitmap, less those speculation skips."""
        return self.bitmap if self.speculated is None else self.speculated

    @property
    def rows(self):
        """The query blocks the descriptor computes."""
        first = int(self.descriptor["ROW_FIRST"])
        return range(first, first + int(self.descriptor["ROW_COUNT"]))


@dataclasses.dataclass
class EngineLayer:
    """One engine start: the descriptor list's address and the heads, in list order."""
    desc_addr: int
    heads: list              # EngineProgram per head


def check_program(config, prog, desc_addr, n_heads):
    """Raise a one-line :class:`ParoError` naming the first descriptor field, table or array of ``prog`` (in a
    list of ``n_heads`` at ``desc_addr``) that this engine build cannot take."""
    missing = [f.name for f in DESCRIPTOR if f.name not in descriptor_fields(prog.descriptor)]
    if missing:
        raise ParoError(f"descriptor has no field {missing[0]}")
    code, message = descriptor_problem(config, {name: int(v) for name, v in prog.descriptor.items()},
                                       desc_addr, n_heads)
    if code:
        raise ParoError(f"descriptor {message}")
    blocks, B = int(prog.descriptor["N_BLOCKS"]), config.block_size
    for name in TABLE_FIELDS:
        values = np.asarray(prog.tables.get(name, ()))
        if values.shape != (blocks,):
            raise ParoError(f"table {name} must have {blocks} entries (N_BLOCKS), got shape {values.shape}")
        if values.min() < TABLE_RANGE[0] or values.max() > TABLE_RANGE[1]:
            bad = int(values[(values < TABLE_RANGE[0]) | (values > TABLE_RANGE[1])][0])
            raise ParoError(f"table {name} entry = {bad} is outside [{TABLE_RANGE[0]}, {TABLE_RANGE[1]}]")
    bitmap = np.asarray(prog.bitmap)
    if bitmap.shape != (blocks, blocks):
        raise ParoError(f"bitmap must be {blocks} x {blocks} (N_BLOCKS), got shape {bitmap.shape}")
    unknown = sorted(set(np.unique(bitmap).tolist()) - set(config.bitwidths))
    if unknown:
        raise ParoError(f"bitmap has bitwidth {unknown[0]}; this engine computes {list(config.bitwidths)}")
    check_kept_keys(config, bitmap)
    if prog.speculated is not None:
        speculated, spec = np.asarray(prog.speculated), int(prog.descriptor.get("SPEC", SPEC_OFF))
        if not spec:
            raise ParoError("a program with a speculated bitmap needs SPEC = 1, 2 or 3 in its descriptor")
        kept = speculated.shape == bitmap.shape and ((speculated == bitmap) | (speculated == 0))
        if spec == SPEC_LOW_BITS and speculated.shape == bitmap.shape:
            kept |= speculated == low_bit_blocks(bitmap)                 # an unimportant block at 4 bits
        if spec == SPEC_LUT_PATH and speculated.shape == bitmap.shape:
            kept |= (speculated == LUT_BLOCK) & (bitmap != 0)              # an unimportant block on the LUT path
        if not np.all(kept):
            raise ParoError("the speculated bitmap must be the bitmap with some blocks set to 0 (skipped) or, with "
                            "SPEC = 2, to 4 bits, or with SPEC = 3, to the LUT path's code 1")
    shape = (blocks * B, config.head_dim)
    for name in ("q8", "k8", "v8", "codes"):
        array = np.asarray(getattr(prog, name))
        if array.shape != shape:
            raise ParoError(f"program array {name} must have shape {shape}, got {array.shape}")
    for name in ("q8", "k8", "v8"):
        array = np.asarray(getattr(prog, name))
        if array.min() < -128 or array.max() > 127:
            raise ParoError(f"program array {name} must hold signed bytes, got values in "
                            f"[{array.min()}, {array.max()}]")


def _spans(config, prog):
    blocks = int(prog.descriptor["N_BLOCKS"])
    return {name: (int(prog.descriptor[name]), int(prog.descriptor[name]) + region_bytes(config, name, blocks))
            for name in ADDRESS_FIELDS}


def check_layer(config, layer):
    """Raise a one-line :class:`ParoError` for the first head whose descriptor, tables or arrays this build
    cannot take (the engine's own checks and more), or an output region that overlaps any region of another
    head."""
    n_heads = len(layer.heads)
    if not 1 <= n_heads <= config.max_heads:
        raise ParoError(f"a layer of {n_heads} heads does not fit one start: N_HEADS must be in "
                        f"[1, {config.max_heads}] (build with --max-heads >= {max(n_heads, 1)})")
    code, message = list_problem(config, layer.desc_addr, n_heads)
    if code:
        raise ParoError(message)
    for head, prog in enumerate(layer.heads):
        try:
            check_program(config, prog, layer.desc_addr, n_heads)
        except ParoError as error:
            raise ParoError(f"head {head}: {error}") from None
    spans = [_spans(config, prog) for prog in layer.heads]
    for head, own in enumerate(spans):
        out_low, out_high = own["O_ADDR"]
        for other, regions in enumerate(spans):
            for name, (low, high) in regions.items():
                if other != head and low < out_high and out_low < high:
                    raise ParoError(f"head {head}: the output region [{out_low:#x}, {out_high:#x}) overlaps head "
                                    f"{other}'s {name} region [{low:#x}, {high:#x}); move O_ADDR")


def layer_writes(layer):
    """The AXI4-Lite word writes ``(address, value)`` that set up ``layer`` (START not included)."""
    return [(REGISTERS["DESC_ADDR"].address, layer.desc_addr), (REGISTERS["N_HEADS"].address, len(layer.heads))]


def layer_memory(config, layer):
    """What memory holds before the start: ``[(address, bytes)]`` with the descriptor list and, per head, Q, K,
    V, the bitmap rows and the block table (output regions are left as they are)."""
    stride, segments = descriptor_stride(config), []
    for head, prog in enumerate(layer.heads):
        words = np.asarray(descriptor_words(prog.descriptor), dtype="<u4").tobytes()
        segments.append((layer.desc_addr + head * stride, words + bytes(stride - len(words))))
        d = prog.descriptor
        blocks = int(d["N_BLOCKS"])
        for name, array in (("Q_ADDR", prog.q8), ("K_ADDR", prog.k8), ("V_ADDR", prog.v8)):
            segments.append((int(d[name]), np.asarray(array, dtype=np.int8).tobytes()))
        rows = np.zeros((blocks, bitmap_stride(config, blocks)), dtype=np.uint8)
        rows[:, :blocks] = prog.bitmap
        segments.append((int(d["BITMAP_ADDR"]), rows.tobytes()))
        table = np.stack([np.asarray(prog.tables[name]) for name in TABLE_FIELDS], axis=1).astype("<u2").tobytes()
        segments.append((int(d["TABLE_ADDR"]), table + bytes(table_bytes(config, blocks) - len(table))))
    return segments


LAYER_FORMAT = "paro-engine-layer"
LAYER_VERSION = 3          # 3: a layer of heads, descriptors, bitmap and tables in memory


def save_layer(config, layer, path, check=True):
    """Check ``layer`` against ``config`` and write it atomically: an ``.npz`` with a JSON header (format,
    version, config, descriptor list address, per head its descriptor and out_exp) and the arrays (``h<n>_``
    prefixed); no pickles. ``check=False`` writes a layer the engine must refuse (benches of its checks)."""
    if check:
        check_layer(config, layer)
    header = {"format": LAYER_FORMAT, "version": LAYER_VERSION, "config": config.to_dict(),
              "desc_addr": int(layer.desc_addr),
              "heads": [{"descriptor": {f.name: int(descriptor_fields(p.descriptor)[f.name]) for f in DESCRIPTOR},
                         "out_exp": int(p.out_exp)} for p in layer.heads]}
    arrays = {}
    for n, prog in enumerate(layer.heads):
        arrays.update({f"h{n}_q8": np.asarray(prog.q8, dtype=np.int8), f"h{n}_k8": np.asarray(prog.k8, dtype=np.int8),
                       f"h{n}_v8": np.asarray(prog.v8, dtype=np.int8),
                       f"h{n}_bitmap": np.asarray(prog.bitmap, dtype=np.uint8),
                       f"h{n}_codes": np.asarray(prog.codes, dtype=np.int32),
                       **({} if prog.speculated is None else
                          {f"h{n}_speculated": np.asarray(prog.speculated, dtype=np.uint8)}),
                       **{f"h{n}_table_{name}": np.asarray(prog.tables[name], dtype=np.int64)
                          for name in TABLE_FIELDS}})
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_layer(path, check=True):
    """Read a layer file: ``(config, EngineLayer)``, validated (unless ``check=False``: a layer the engine must
    refuse); a defect is one line naming the field."""
    arrays = read_npz(path, "engine layer", "write it with paro.sw.contract.save_layer")

    def bad(field, why):
        return ParoError(f"engine layer {str(path)!r}: field {field!r} {why}")

    for name, value in arrays.items():          # a float or complex array was cast silently: tests/test_fuzz.py
        if value.dtype.kind not in "iub":
            raise bad(name, f"must be an integer array, got dtype {value.dtype}")
    try:
        header = json.loads(arrays.pop("header").astype(np.uint8).tobytes().decode())
    except KeyError:
        raise bad("header", "is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
        raise bad("header", "is not UTF-8 JSON") from None
    if not isinstance(header, dict) or header.get("format") != LAYER_FORMAT:
        raise bad("header.format", f"must be {LAYER_FORMAT!r}")
    if header.get("version") != LAYER_VERSION:
        raise bad("header.version", f"must be {LAYER_VERSION}, got {header.get('version')!r}")
    try:
        config = AcceleratorConfig.from_dict(header["config"])
        desc_addr = int(header["desc_addr"])
        heads = [({f.name: int(descriptor_fields(h["descriptor"])[f.name]) for f in DESCRIPTOR}, int(h["out_exp"]))
                 for h in header["heads"]]
    except (KeyError, TypeError, ValueError, ParoError) as error:
        raise bad("header", f"is incomplete or invalid ({type(error).__name__}: {error})") from None
    programs = []
    for n, (descriptor, out_exp) in enumerate(heads):
        names = [f"h{n}_{a}" for a in ("q8", "k8", "v8", "bitmap", "codes")]
        names += [f"h{n}_table_{name}" for name in TABLE_FIELDS]
        missing = [name for name in names if name not in arrays]
        if missing:
            raise bad(missing[0], "is missing")
        programs.append(EngineProgram(
            descriptor, {name: arrays[f"h{n}_table_{name}"].astype(np.int64) for name in TABLE_FIELDS},
            arrays[f"h{n}_bitmap"].astype(np.uint8),
            *(arrays[f"h{n}_{a}"].astype(np.int64) for a in ("q8", "k8", "v8", "codes")), out_exp,
            arrays[f"h{n}_speculated"].astype(np.uint8) if f"h{n}_speculated" in arrays else None))
    layer = EngineLayer(desc_addr, programs)
    try:
        if check:
            check_layer(config, layer)
    except ParoError as error:
        raise ParoError(f"engine layer {str(path)!r}: {error}") from None
    return config, layer
