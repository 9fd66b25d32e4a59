"""What both engine run modes share: the memory image of a layer, the registers read after a run, and the
check of a run's output codes and counters against the layer (golden codes), the golden fetcher (bytes read)
and the golden sequencer (what a refused descriptor must leave behind). No cocotb here: the fast mode
(:mod:`paro.sim.fast`) uses it outside a simulator."""

import numpy as np

from paro.sw import golden
from paro.sw.contract import (COUNTERS, ERRORS, REGISTERS, STATUS_BITS, block_counters, head_counter_address,
                              layer_memory, region_bytes)

__all__ = ["Mismatch", "memory_image", "memory_size", "decode_codes", "readout", "split_readout", "output_regions",
           "compare"]


class Mismatch(Exception):
    """The engine's output differs from the golden codes (``status``: ``mismatch``, ``timeout`` or ``error``:
    the engine refused a descriptor it should have taken)."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


def output_regions(config, layer):
    """Per head ``(address, bytes)`` of its output region."""
    return [(int(p.descriptor["O_ADDR"]), region_bytes(config, "O_ADDR", int(p.descriptor["N_BLOCKS"])))
            for p in layer.heads]


def memory_size(config, layers):
    """Bytes of a memory (a power of two) that holds every segment and output region of every layer."""
    top = max(address + len(data) for layer in layers for address, data in layer_memory(config, layer))
    top = max([top] + [address + size for layer in layers for address, size in output_regions(config, layer)])
    return 1 << (top - 1).bit_length()


def memory_image(config, layer, size):
    """``size`` bytes: the layer's descriptors, Q, K, V, bitmap rows and tables at their addresses, zeros
    elsewhere (the output regions too)."""
    image = bytearray(size)
    for address, data in layer_memory(config, layer):
        image[address:address + len(data)] = data
    return image


def decode_codes(config, data):
    """Output codes ``[tokens, head_dim]`` from the output region's bytes."""
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.int64).reshape(-1, config.head_dim)


#: Registers read after a run besides the per-head counters: status, then the totals.
_TOTALS = ("STATUS", "ERROR", "HEADS_DONE", *COUNTERS)


def readout(n_heads):
    """The registers read after a run: ``[(key, word address)]``: the status registers, the totals and, per
    head, its counters (keys ``"<head>.<COUNTER>"``)."""
    return ([(name, REGISTERS[name].address) for name in _TOTALS]
            + [(f"{head}.{name}", head_counter_address(head, name)) for head in range(n_heads) for name in COUNTERS])


def split_readout(values, n_heads):
    """``(totals, per_head)`` from the values of :func:`readout` (``per_head``: a dict of counters a head)."""
    totals = {name: values[name] for name in _TOTALS}
    return totals, [{name: values[f"{head}.{name}"] for name in COUNTERS} for head in range(n_heads)]


def _status(totals):
    return {bit: bool(totals["STATUS"] >> n & 1) for n, bit in enumerate(STATUS_BITS)}


def compare(config, layer, codes, totals, per_head, expect_error=None):
    """Raise :class:`Mismatch` at the first output code (of the query blocks each head computes) or counter
    that differs from the layer's. With ``expect_error`` = ``(code, head)`` the engine must have refused that
    descriptor and written nothing (every output region still zero)."""
    status = _status(totals)
    if expect_error is not None:
        code, head = expect_error
        want = code | head << 8
        if not status["error"] or totals["ERROR"] != want:
            raise Mismatch("mismatch", f"expected the engine to refuse head {head} with code {code} "
                                       f"({ERRORS[code]}); STATUS {totals['STATUS']:#x}, ERROR {totals['ERROR']:#x}")
        if totals["BYTES_WRITTEN"] or totals["HEADS_DONE"] or any(np.any(c) for c in codes):
            raise Mismatch("mismatch", f"the refused layer wrote {totals['BYTES_WRITTEN']} bytes "
                                       f"({totals['HEADS_DONE']} heads done); nothing may be written")
        return
    if status["error"]:
        code, head = totals["ERROR"] & 0xFF, totals["ERROR"] >> 8
        raise Mismatch("error", f"the engine refused head {head}'s descriptor: code {code} "
                                f"({ERRORS.get(code, 'unknown')})")
    if totals["HEADS_DONE"] != len(layer.heads):
        raise Mismatch("mismatch", f"HEADS_DONE = {totals['HEADS_DONE']}, expected {len(layer.heads)}")
    B, R = config.block_size, config.rows
    total_reads, reads = golden.layer_reads(layer, config)
    sums = {name: 0 for name in ("KEPT8", "KEPT4", "KEPT2", "SKIPPED", "BYTES_WRITTEN")}
    for head, (prog, got_codes, counters) in enumerate(zip(layer.heads, codes, per_head)):
        rows = prog.rows
        computed = range(rows.start * B, rows.stop * B)
        for query, (got, want) in enumerate(zip(got_codes, np.asarray(prog.codes))):
            if query in computed and not np.array_equal(got, want):
                dim = int(np.flatnonzero(got != want)[0]) // R * R
                raise Mismatch("mismatch", f"head {head}, output query {query}, head dims {dim}..{dim + R - 1}: "
                                           f"got {got[dim:dim + R].tolist()}, golden {want[dim:dim + R].tolist()}")
        bitmap = np.asarray(prog.computed_bitmap)[rows.start:rows.stop]       # speculation's skips included
        expected = block_counters(bitmap)
        expected["BYTES_READ"] = reads[head]
        expected["BYTES_WRITTEN"] = region_bytes(config, "O_ADDR", len(rows))
        if not int(prog.descriptor.get("SPEC", 0)):
            expected.update(SPEC_BUSY=0, SPEC_WAIT=0)
        elif not counters["SPEC_BUSY"] > counters["SPEC_WAIT"] > 0:    # the first row waits for its speculation
            raise Mismatch("mismatch", f"head {head}: speculation counters SPEC_BUSY = {counters['SPEC_BUSY']}, "
                                       f"SPEC_WAIT = {counters['SPEC_WAIT']}; expected SPEC_BUSY > SPEC_WAIT > 0")
        for name, value in expected.items():
            if counters[name] != value:
                raise Mismatch("mismatch", f"head {head}: counter {name} = {counters[name]}, expected {value}")
        for name in sums:
            sums[name] += expected[name]
    for name, value in {**sums, "BYTES_READ": total_reads}.items():
        if totals[name] != value:
            raise Mismatch("mismatch", f"total counter {name} = {totals[name]}, expected {value}")
