"""The attention engine's register and memory contract: the one owner of the register map, every register's
width and legal range, the table layouts, the program file format and the checks.

The hardware register file (:mod:`paro.hw.registers`), the program builder (:mod:`paro.sw.program`), the
cocotb bench (:mod:`paro.sim.test_engine`) and ``paro simulate`` all import this module; none of them
restates an address, a width or a range.

Bus: word addresses of ``ADDRESS_BITS`` bits, 32-bit data. An address is ``region << OFFSET_BITS | offset``:
region 0 holds the scalar registers, the other regions one table each.

================ ======= ====== ======== =====================================================================
register         address access width    legal values (checked before a run)
================ ======= ====== ======== =====================================================================
``START``        0x00    w      1        write 1: load the registers' values and start the head
``N_TOKENS``     0x01    w      cfg      real tokens, ``(N_BLOCKS - 1) * B < N_TOKENS <= N_BLOCKS * B``
``N_BLOCKS``     0x02    w      cfg      query (= key) blocks of the head, ``[1, max_blocks]``
``SCORE_SHIFT``  0x03    w      6        ``[MIN_SCORE_SHIFT, 63]``: right shift of the score scaling
``FINAL_SHIFT``  0x04    w      7        ``[1, 127]``: right shift of the output stage
``Q_ADDR``       0x05    w      32       byte address of Q in memory, a multiple of ``REGION_ALIGN``
``K_ADDR``       0x06    w      32       byte address of K (smoothed)
``V_ADDR``       0x07    w      32       byte address of V
``O_ADDR``       0x08    w      32       byte address of the output codes (must not overlap Q, K or V)
``ROW_FIRST``    0x09    w      cfg      first query block to compute, ``ROW_FIRST + ROW_COUNT <= N_BLOCKS``
``ROW_COUNT``    0x0A    w      cfg      query blocks to compute (only their codes are written), ``>= 1``
``STATUS``       0x10    r      2        bit 0 busy, bit 1 done
``CYCLES``       0x11    r      32       busy cycles of the last start
``ARRAY_BEATS``  0x12    r      32       input beats the array took
``STALL_CYCLES`` 0x13    r      32       ``CYCLES - ARRAY_BEATS``
``KEPT8``        0x14    r      32       8-bit blocks computed (pass A)
``KEPT4``        0x15    r      32       4-bit blocks computed (pass A)
``SKIPPED``      0x16    r      32       0-bit blocks skipped (pass A)
``BYTES_READ``   0x17    r      32       bytes the AXI4 master read (Q, kept K/V blocks)
``BYTES_WRITTEN``0x18    r      32       bytes the AXI4 master wrote (output codes)
================ ======= ====== ======== =====================================================================

Memory (the engine's AXI4 master, ``AXI_ADDRESS_BITS`` byte addresses, ``config.axi_data_bits`` data): Q, K
and V are ``int8 [N_BLOCKS * B, head_dim]`` row-major at ``Q_ADDR``, ``K_ADDR`` and ``V_ADDR``; the output
codes are ``int16 [N_BLOCKS * B, head_dim]`` little-endian at ``O_ADDR``. Reads and writes are INCR bursts
of at most ``MAX_BURST_BEATS`` beats that never cross a ``BURST_BOUNDARY``.

AXI4-Lite control port (the engine's register slave): byte address = word address x 4
(``AXIL_ADDRESS_BITS`` bits), 32-bit data. Only aligned, full-word accesses act (``wstrb = 0b1111``); any
other answers ``SLVERR`` and neither writes nor reads a register. Reads of unmapped words return 0.

Tables (one entry per block, ``max_blocks`` deep, 16-bit entries, values in ``[1, 2**15 - 1]``): ``CQ`` (query
block score multipliers) at region 1, ``CK`` (key block) at 2, ``CV8`` and ``CV4`` (value multipliers of 8-
and 4-bit blocks) at 3 and 4. ``BITMAP`` at region 8: entry ``i * max_blocks + j`` holds the bitwidth of block
``(i, j)`` (4 bits, a value of ``config.bitwidths``).
"""

import dataclasses
import io
import json

import numpy as np

from paro.config import SCORE_WIDTH, AcceleratorConfig
from paro.errors import ParoError
from paro.files import atomic_write_bytes, read_npz

__all__ = ["Register", "Table", "REGISTERS", "TABLES", "BITMAP", "PROGRAM_REGISTERS", "COUNTERS",
           "ADDRESS_BITS", "OFFSET_BITS", "DATA_BITS", "AXIL_ADDRESS_BITS", "RESP_OKAY", "RESP_SLVERR",
           "MIN_SCORE_SHIFT", "EngineProgram", "check_engine_config",
           "engine_buffers", "check_kept_keys", "check_memory_map", "memory_map", "region_bytes",
           "ADDRESS_REGISTERS", "AXI_ADDRESS_BITS", "MAX_BURST_BEATS", "BURST_BOUNDARY", "REGION_ALIGN",
           "OUTPUT_CODE_BYTES",
           "check_program", "program_writes", "save_program", "load_program"]

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
#: Smallest score shift the scaling unit supports (keeps the scaled score within SCORE_WIDTH bits).
MIN_SCORE_SHIFT = 12
#: Largest sequence the engine is built for while it holds the whole bitmap on chip (512 x 512 blocks of 64
#: tokens: 1 Mbit).
MAX_ENGINE_SEQ_LEN = 32768


@dataclasses.dataclass(frozen=True)
class Register:
    """One scalar register: ``access`` is ``"w"`` (control, written before a start) or ``"r"`` (status)."""
    name: str
    address: int
    access: str
    doc: str

    def width(self, config):
        """Bits the hardware keeps."""
        return {"START": 1, "N_TOKENS": config.max_seq_len.bit_length(),
                "N_BLOCKS": config.max_blocks.bit_length(), "ROW_FIRST": config.max_blocks.bit_length(),
                "ROW_COUNT": config.max_blocks.bit_length(), "SCORE_SHIFT": 6, "FINAL_SHIFT": 7,
                "STATUS": 2}.get(self.name, DATA_BITS)

    def legal(self, config):
        """Inclusive ``(low, high)`` of the values a program may write."""
        return {"START": (0, 1), "N_TOKENS": (1, config.max_blocks * config.block_size),
                "N_BLOCKS": (1, config.max_blocks), "ROW_FIRST": (0, config.max_blocks - 1),
                "ROW_COUNT": (1, config.max_blocks), "SCORE_SHIFT": (MIN_SCORE_SHIFT, 63),
                "FINAL_SHIFT": (1, 127)}.get(self.name, (0, (1 << DATA_BITS) - 1))


@dataclasses.dataclass(frozen=True)
class Table:
    """A per-block table (``entries(config)`` deep) or the bitmap, in its own address region."""
    name: str
    region: int
    entry_bits: int
    doc: str

    @property
    def base(self):
        return self.region << OFFSET_BITS

    def entries(self, config):
        return config.max_blocks * config.max_blocks if self.name == "BITMAP" else config.max_blocks


REGISTERS = {r.name: r for r in (
    Register("START", 0x00, "w", "write 1 to start the head"),
    Register("N_TOKENS", 0x01, "w", "real tokens of the head (the rest of the last block is padding)"),
    Register("N_BLOCKS", 0x02, "w", "query (= key) blocks of the head"),
    Register("SCORE_SHIFT", 0x03, "w", "right shift of the score scaling unit"),
    Register("FINAL_SHIFT", 0x04, "w", "right shift of the output stage"),
    Register("Q_ADDR", 0x05, "w", "byte address of Q in memory"),
    Register("K_ADDR", 0x06, "w", "byte address of K in memory"),
    Register("V_ADDR", 0x07, "w", "byte address of V in memory"),
    Register("O_ADDR", 0x08, "w", "byte address of the output codes in memory"),
    Register("ROW_FIRST", 0x09, "w", "first query block to compute"),
    Register("ROW_COUNT", 0x0A, "w", "query blocks to compute"),
    Register("STATUS", 0x10, "r", "bit 0 busy, bit 1 done"),
    Register("CYCLES", 0x11, "r", "busy cycles of the last start"),
    Register("ARRAY_BEATS", 0x12, "r", "input beats the array took"),
    Register("STALL_CYCLES", 0x13, "r", "busy cycles in which the array took no beat"),
    Register("KEPT8", 0x14, "r", "8-bit blocks computed"),
    Register("KEPT4", 0x15, "r", "4-bit blocks computed"),
    Register("SKIPPED", 0x16, "r", "0-bit blocks skipped"),
    Register("BYTES_READ", 0x17, "r", "bytes read from memory"),
    Register("BYTES_WRITTEN", 0x18, "r", "bytes written to memory"),
)}
#: Registers a program writes before START, in the order it writes them.
PROGRAM_REGISTERS = ("N_TOKENS", "N_BLOCKS", "SCORE_SHIFT", "FINAL_SHIFT", "Q_ADDR", "K_ADDR", "V_ADDR", "O_ADDR",
                     "ROW_FIRST", "ROW_COUNT")
#: The memory regions, by their address registers.
ADDRESS_REGISTERS = ("Q_ADDR", "K_ADDR", "V_ADDR", "O_ADDR")
#: Read-only counters, read after done.
COUNTERS = ("CYCLES", "ARRAY_BEATS", "STALL_CYCLES", "KEPT8", "KEPT4", "SKIPPED", "BYTES_READ", "BYTES_WRITTEN")

TABLES = {t.name: t for t in (
    Table("CQ", 1, 16, "score multiplier of each query block"),
    Table("CK", 2, 16, "score multiplier of each key block"),
    Table("CV8", 3, 16, "value multiplier of each key block at 8 bits"),
    Table("CV4", 4, 16, "value multiplier of each key block at 4 bits"),
)}
BITMAP = Table("BITMAP", 8, 4, "bitwidth of block (i, j) at entry i * max_blocks + j")
#: Table entries are integer mantissas of 15 bits (``sw.golden.int_multipliers``), never 0.
TABLE_RANGE = (1, (1 << 15) - 1)


def region_bytes(config, name, n_blocks):
    """Bytes of the memory region at address register ``name`` for a head of ``n_blocks`` blocks."""
    per_value = OUTPUT_CODE_BYTES if name == "O_ADDR" else 1
    return n_blocks * config.block_size * config.head_dim * per_value


def memory_map(config, n_blocks, base=REGION_ALIGN):
    """Default addresses: Q, K, V and O one after the other from ``base``, each on a ``REGION_ALIGN`` boundary."""
    addresses = {}
    for name in ADDRESS_REGISTERS:
        addresses[name] = base
        base += -(-region_bytes(config, name, n_blocks) // REGION_ALIGN) * REGION_ALIGN
    return addresses


def engine_buffers(config):
    """Every on-chip buffer of the engine: name -> ``{"entries", "width", "bits"}`` (the hardware sizes its
    memories from this; the params JSON reports it)."""
    B, d, R = config.block_size, config.head_dim, config.rows
    sizes = {
        "k_buffer": (config.kv_cache_blocks * B, 8 * d), "v_buffer": (config.kv_cache_blocks * B, 8 * d),
        "q_buffer": (2 * B, 8 * d),
        "score_buffer": (B * config.max_kept_keys, SCORE_WIDTH),
        "output_accumulator": (B * (d // R), R * config.acc_out_width),
        "bitmap": (BITMAP.entries(config), BITMAP.entry_bits),
        **{f"table_{name.lower()}": (table.entries(config), table.entry_bits) for name, table in TABLES.items()},
    }
    return {name: {"entries": entries, "width": width, "bits": entries * width}
            for name, (entries, width) in sizes.items()}


def check_engine_config(config):
    """Raise unless the attention engine can be built for ``config``."""
    if 4 not in config.bitwidths or set(config.bitwidths) - {0, 4, 8}:
        raise ParoError(f"the engine computes bitwidths {{0, 4, 8}}; the configuration uses "
                        f"{list(config.bitwidths)}")
    if not 16 * config.rows <= config.axi_data_bits <= 8 * config.head_dim:
        raise ParoError(f"axi_data_bits {config.axi_data_bits} must be in [16 x rows, 8 x head_dim] = "
                        f"[{16 * config.rows}, {8 * config.head_dim}] (an output beat fits a data beat, a data "
                        f"beat fits a token row)")
    if config.max_seq_len > MAX_ENGINE_SEQ_LEN:
        raise ParoError(f"the engine holds the whole bitmap on chip (max_blocks^2 entries); max_seq_len "
                        f"{config.max_seq_len} is too large to build, use <= {MAX_ENGINE_SEQ_LEN}")


def check_memory_map(config, addresses, n_blocks):
    """Raise a one-line :class:`ParoError` for a misaligned region, one past the address space, or an output
    region that overlaps an input."""
    spans = {}
    for name in ADDRESS_REGISTERS:
        base, size = addresses[name], region_bytes(config, name, n_blocks)
        if base % REGION_ALIGN:
            raise ParoError(f"register {name} = {base:#x} is not a multiple of {REGION_ALIGN} bytes; align the "
                            f"region to {REGION_ALIGN}")
        if base + size > 1 << AXI_ADDRESS_BITS:
            raise ParoError(f"register {name} = {base:#x}: the region's {size} bytes run past the "
                            f"{AXI_ADDRESS_BITS}-bit address space")
        spans[name] = (base, base + size)
    out_low, out_high = spans["O_ADDR"]
    for name in ("Q_ADDR", "K_ADDR", "V_ADDR"):
        low, high = spans[name]
        if low < out_high and out_low < high:
            raise ParoError(f"the output region [{out_low:#x}, {out_high:#x}) overlaps {name}'s "
                            f"[{low:#x}, {high:#x}); move O_ADDR")


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
    registers: dict          # PROGRAM_REGISTERS -> int
    tables: dict             # TABLES names -> int array, one entry per block
    bitmap: np.ndarray       # uint8 [n_blocks, n_blocks]
    q8: np.ndarray           # int64 [n_blocks * block_size, head_dim]
    k8: np.ndarray
    v8: np.ndarray
    codes: np.ndarray        # expected output codes [n_blocks * block_size, head_dim]
    out_exp: int             # dequantise: codes * 2**-out_exp


def _range_error(what, value, low, high, config):
    hint = ""
    if what == "register N_BLOCKS" and value > high:
        hint = (f" (this engine: max_seq_len {config.max_seq_len} / block_size {config.block_size}); build "
                f"and calibrate with --max-seq-len >= {value * config.block_size}")
    return ParoError(f"{what} = {value} is outside [{low}, {high}]{hint}")


def check_program(config, prog):
    """Raise a one-line :class:`ParoError` naming the first register, table or array of ``prog`` that this
    engine build cannot take."""
    # N_BLOCKS first: a plan longer than the build fails there, with the fix in the message.
    for name in ("N_BLOCKS",) + tuple(n for n in PROGRAM_REGISTERS if n != "N_BLOCKS"):
        if name not in prog.registers:
            raise ParoError(f"program has no register {name}")
        value, (low, high) = int(prog.registers[name]), REGISTERS[name].legal(config)
        if not low <= value <= high:
            raise _range_error(f"register {name}", value, low, high, config)
    blocks, tokens, B = int(prog.registers["N_BLOCKS"]), int(prog.registers["N_TOKENS"]), config.block_size
    if not (blocks - 1) * B < tokens <= blocks * B:
        raise ParoError(f"register N_TOKENS = {tokens} does not fall in the last of N_BLOCKS = {blocks} blocks "
                        f"of {B} tokens")
    first, count = int(prog.registers["ROW_FIRST"]), int(prog.registers["ROW_COUNT"])
    if first + count > blocks:
        raise ParoError(f"registers ROW_FIRST = {first} and ROW_COUNT = {count} reach past N_BLOCKS = {blocks}")
    check_memory_map(config, {name: int(prog.registers[name]) for name in ADDRESS_REGISTERS}, blocks)
    for name in TABLES:
        values = np.asarray(prog.tables.get(name, ()))
        if values.shape != (blocks,):
            raise ParoError(f"table {name} must have {blocks} entries (N_BLOCKS), got shape {values.shape}")
        if values.min() < TABLE_RANGE[0] or values.max() > TABLE_RANGE[1]:
            bad = int(values[(values < TABLE_RANGE[0]) | (values > TABLE_RANGE[1])][0])
            raise _range_error(f"table {name} entry", bad, *TABLE_RANGE, config)
    bitmap = np.asarray(prog.bitmap)
    if bitmap.shape != (blocks, blocks):
        raise ParoError(f"bitmap must be {blocks} x {blocks} (N_BLOCKS), got shape {bitmap.shape}")
    unknown = sorted(set(np.unique(bitmap).tolist()) - set(config.bitwidths))
    if unknown:
        raise ParoError(f"bitmap has bitwidth {unknown[0]}; this engine computes {list(config.bitwidths)}")
    check_kept_keys(config, bitmap)
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


def program_writes(config, prog):
    """The bus writes ``(address, value)`` that load ``prog``: registers, tables, bitmap (START not included)."""
    writes = [(REGISTERS[name].address, int(prog.registers[name])) for name in PROGRAM_REGISTERS]
    for name, table in TABLES.items():
        writes += [(table.base + index, int(value)) for index, value in enumerate(prog.tables[name])]
    bitmap = np.asarray(prog.bitmap)
    writes += [(BITMAP.base + i * config.max_blocks + j, int(bitmap[i, j]))
               for i in range(bitmap.shape[0]) for j in range(bitmap.shape[1])]
    return writes


PROGRAM_FORMAT = "paro-engine-program"
PROGRAM_VERSION = 2          # 2: memory addresses (Q_ADDR, K_ADDR, V_ADDR, O_ADDR)


def save_program(config, prog, path):
    """Check ``prog`` against ``config`` and write it atomically: an ``.npz`` with a JSON header (format,
    version, config, registers, out_exp) and the arrays; no pickles."""
    check_program(config, prog)
    header = {"format": PROGRAM_FORMAT, "version": PROGRAM_VERSION, "config": config.to_dict(),
              "registers": {name: int(prog.registers[name]) for name in PROGRAM_REGISTERS},
              "out_exp": int(prog.out_exp)}
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
             q8=np.asarray(prog.q8, dtype=np.int8), k8=np.asarray(prog.k8, dtype=np.int8),
             v8=np.asarray(prog.v8, dtype=np.int8), bitmap=np.asarray(prog.bitmap, dtype=np.uint8),
             codes=np.asarray(prog.codes, dtype=np.int32),
             **{f"table_{name}": np.asarray(prog.tables[name], dtype=np.int64) for name in TABLES})
    atomic_write_bytes(path, buffer.getvalue())


def load_program(path):
    """Read a program file: ``(config, EngineProgram)``, validated; a defect is one line naming the field."""
    arrays = read_npz(path, "engine program", "write it with paro.sw.contract.save_program")

    def bad(field, why):
        return ParoError(f"engine program {str(path)!r}: field {field!r} {why}")

    try:
        header = json.loads(arrays.pop("header").astype(np.uint8).tobytes().decode())
    except KeyError:
        raise bad("header", "is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
        raise bad("header", "is not UTF-8 JSON") from None
    if not isinstance(header, dict) or header.get("format") != PROGRAM_FORMAT:
        raise bad("header.format", f"must be {PROGRAM_FORMAT!r}")
    if header.get("version") != PROGRAM_VERSION:
        raise bad("header.version", f"must be {PROGRAM_VERSION}, got {header.get('version')!r}")
    try:
        config = AcceleratorConfig.from_dict(header["config"])
        registers = {name: int(header["registers"][name]) for name in PROGRAM_REGISTERS}
        out_exp = int(header["out_exp"])
    except (KeyError, TypeError, ValueError, ParoError) as error:
        raise bad("header", f"is incomplete or invalid ({type(error).__name__}: {error})") from None
    names = ["q8", "k8", "v8", "bitmap", "codes"] + [f"table_{name}" for name in TABLES]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise bad(missing[0], "is missing")
    prog = EngineProgram(registers, {name: arrays[f"table_{name}"].astype(np.int64) for name in TABLES},
                         arrays["bitmap"].astype(np.uint8), *(arrays[n].astype(np.int64) for n in ("q8", "k8", "v8")),
                         arrays["codes"].astype(np.int64), out_exp)
    try:
        check_program(config, prog)
    except ParoError as error:
        raise ParoError(f"engine program {str(path)!r}: {error}") from None
    return config, prog
