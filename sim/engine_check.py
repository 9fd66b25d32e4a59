"""What both engine run modes share: the memory image of a program, and the check of a run's output codes
and counters against the program (golden codes) and the golden fetcher (bytes read). No cocotb here: the
fast mode (:mod:`paro.sim.fast`) uses it outside a simulator."""

import numpy as np

from paro.sw import golden
from paro.sw.contract import ADDRESS_REGISTERS, region_bytes

__all__ = ["Mismatch", "memory_image", "memory_size", "decode_codes", "compare"]


class Mismatch(Exception):
    """The engine's output differs from the golden codes (``status``: ``mismatch`` or ``timeout``)."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


def memory_size(config, programs):
    """Bytes of a memory (a power of two) that holds every region of every program."""
    top = max(int(p.registers[name]) + region_bytes(config, name, int(p.registers["N_BLOCKS"]))
              for p in programs for name in ADDRESS_REGISTERS)
    return 1 << (top - 1).bit_length()


def memory_image(config, prog, size):
    """``size`` bytes: Q, K and V of ``prog`` at their addresses, zeros elsewhere (the output region too)."""
    image = bytearray(size)
    for name, array in (("Q_ADDR", prog.q8), ("K_ADDR", prog.k8), ("V_ADDR", prog.v8)):
        data = np.asarray(array, dtype=np.int8).tobytes()
        base = int(prog.registers[name])
        image[base:base + len(data)] = data
    return image


def decode_codes(config, data):
    """Output codes ``[tokens, head_dim]`` from the output region's bytes."""
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.int64).reshape(-1, config.head_dim)


def compare(config, prog, codes, counters):
    """Raise :class:`Mismatch` at the first output code (of the query blocks the program computes) or counter
    that differs from the program's."""
    R, B = config.rows, config.block_size
    first, count = int(prog.registers["ROW_FIRST"]), int(prog.registers["ROW_COUNT"])
    computed = slice(first * B, (first + count) * B)           # the query blocks the program computes
    for query, (got, want) in enumerate(zip(codes, np.asarray(prog.codes))):
        if computed.start <= query < computed.stop and not np.array_equal(got, want):
            dim = int(np.flatnonzero(got != want)[0]) // R * R
            raise Mismatch("mismatch", f"output query {query}, head dims {dim}..{dim + R - 1}: got "
                                       f"{got[dim:dim + R].tolist()}, golden {want[dim:dim + R].tolist()}")
    bitmap = np.asarray(prog.bitmap)[first:first + count]
    expected = {name: int((bitmap == bits).sum()) for name, bits in (("KEPT8", 8), ("KEPT4", 4), ("SKIPPED", 0))}
    requests = golden.fetcher(prog.bitmap, prog.registers, config)
    expected["BYTES_READ"] = sum(rows * config.head_dim for _, rows in requests)
    expected["BYTES_WRITTEN"] = region_bytes(config, "O_ADDR", count)
    for name, value in expected.items():
        if counters[name] != value:
            raise Mismatch("mismatch", f"counter {name} = {counters[name]}, expected {value}")
