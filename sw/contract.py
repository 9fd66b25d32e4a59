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
``STATUS``       0x10    r      2        bit 0 busy, bit 1 done
``CYCLES``       0x11    r      32       busy cycles of the last start
``ARRAY_BEATS``  0x12    r      32       input beats the array took
``STALL_CYCLES`` 0x13    r      32       ``CYCLES - ARRAY_BEATS``
``KEPT8``        0x14    r      32       8-bit blocks computed (pass A)
``KEPT4``        0x15    r      32       4-bit blocks computed (pass A)
``SKIPPED``      0x16    r      32       0-bit blocks skipped (pass A)
================ ======= ====== ======== =====================================================================

Tables (one entry per block, ``max_blocks`` deep, 16-bit entries, values in ``[1, 2**15 - 1]``): ``CQ`` (query
block score multipliers) at region 1, ``CK`` (key block) at 2, ``CV8`` and ``CV4`` (value multipliers of 8-
and 4-bit blocks) at 3 and 4. ``BITMAP`` at region 8: entry ``i * max_blocks + j`` holds the bitwidth of block
``(i, j)`` (4 bits, a value of ``config.bitwidths``).
"""

import dataclasses
import io
import json

import numpy as np

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.files import atomic_write_bytes, read_npz

__all__ = ["Register", "Table", "REGISTERS", "TABLES", "BITMAP", "PROGRAM_REGISTERS", "COUNTERS",
           "ADDRESS_BITS", "OFFSET_BITS", "DATA_BITS", "MIN_SCORE_SHIFT", "EngineProgram", "check_engine_config",
           "check_program", "program_writes", "save_program", "load_program"]

ADDRESS_BITS = 24
OFFSET_BITS = 20
DATA_BITS = 32
#: Smallest score shift the scaling unit supports (keeps the scaled score within SCORE_WIDTH bits).
MIN_SCORE_SHIFT = 12
#: Largest sequence the engine's score buffer (``block_size x max_seq_len`` entries) is built for.
MAX_ENGINE_SEQ_LEN = 4096


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
                "N_BLOCKS": config.max_blocks.bit_length(), "SCORE_SHIFT": 6, "FINAL_SHIFT": 7,
                "STATUS": 2}.get(self.name, DATA_BITS)

    def legal(self, config):
        """Inclusive ``(low, high)`` of the values a program may write."""
        return {"START": (0, 1), "N_TOKENS": (1, config.max_blocks * config.block_size),
                "N_BLOCKS": (1, config.max_blocks), "SCORE_SHIFT": (MIN_SCORE_SHIFT, 63),
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
    Register("STATUS", 0x10, "r", "bit 0 busy, bit 1 done"),
    Register("CYCLES", 0x11, "r", "busy cycles of the last start"),
    Register("ARRAY_BEATS", 0x12, "r", "input beats the array took"),
    Register("STALL_CYCLES", 0x13, "r", "busy cycles in which the array took no beat"),
    Register("KEPT8", 0x14, "r", "8-bit blocks computed"),
    Register("KEPT4", 0x15, "r", "4-bit blocks computed"),
    Register("SKIPPED", 0x16, "r", "0-bit blocks skipped"),
)}
#: Registers a program writes before START, in the order it writes them.
PROGRAM_REGISTERS = ("N_TOKENS", "N_BLOCKS", "SCORE_SHIFT", "FINAL_SHIFT")
#: Read-only counters, read after done.
COUNTERS = ("CYCLES", "ARRAY_BEATS", "STALL_CYCLES", "KEPT8", "KEPT4", "SKIPPED")

TABLES = {t.name: t for t in (
    Table("CQ", 1, 16, "score multiplier of each query block"),
    Table("CK", 2, 16, "score multiplier of each key block"),
    Table("CV8", 3, 16, "value multiplier of each key block at 8 bits"),
    Table("CV4", 4, 16, "value multiplier of each key block at 4 bits"),
)}
BITMAP = Table("BITMAP", 8, 4, "bitwidth of block (i, j) at entry i * max_blocks + j")
#: Table entries are integer mantissas of 15 bits (``sw.golden.int_multipliers``), never 0.
TABLE_RANGE = (1, (1 << 15) - 1)


def check_engine_config(config):
    """Raise unless the attention engine can be built for ``config``."""
    if 4 not in config.bitwidths or set(config.bitwidths) - {0, 4, 8}:
        raise ParoError(f"the engine computes bitwidths {{0, 4, 8}}; the configuration uses "
                        f"{list(config.bitwidths)}")
    if config.max_seq_len > MAX_ENGINE_SEQ_LEN:
        raise ParoError(f"the engine's score buffer is block_size x max_seq_len entries; max_seq_len "
                        f"{config.max_seq_len} is too large to build, use <= {MAX_ENGINE_SEQ_LEN}")


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
PROGRAM_VERSION = 1


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
