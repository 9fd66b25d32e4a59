"""Cycle model of the attention engine: how many cycles a layer of heads takes on the RTL, without simulating it.

The model replays what the engine's blocks do, event by event rather than cycle by cycle (a few arithmetic
steps per kept block), with each block's cycle behaviour as its docstring in ``hw/`` states it:

* **Sequencer** (``hw/sequencer.py``): a check pass reads every descriptor (``CHECK_LATENCY`` cycles each to
  check it), then per head its descriptor again, its block table, the rows, and the head's store cycle.
* **Controller** (``hw/controller.py``): per query block ``LOAD_Q``, pass A (one ``A_NEXT`` cycle per kept block,
  ``(B/R) x (B/(C*ppc))`` QK^T tiles of ``d`` beats), ``A_WAIT`` (the array, the tile queue and the score
  unit's two registers drain, the previous block's output stage is idle), pass B (per kept block
  ``B_NEXT``, ``B_SHIFT``, then per query group ``d/R`` PV tiles of ``B`` beats, back to back), ``B_WAIT``
  (drain and the accumulator's last write), then the output stage beside the next query block.
* **Feed** (``hw/operand_feed.py``): ``FEED_STAGES`` (two) stages; a beat reaches the array two cycles
  after its fire.
* **Array** (``hw/array.py``): a tile's last beat is taken only once the previous tile has drained, so tiles of
  depth ``K`` follow each other every ``max(K, R + C - 1 + beats)`` cycles (``beats`` = ``C`` x products per
  cycle); a tile drains ``R + C - 1`` cycles after its last beat, one column a cycle.
* **Scheduler** (``hw/scheduler.py``): one bitmap column a cycle, one kept block ahead of the controller.
* **Fetcher, cache and memory reader** (``hw/fetcher.py``, ``hw/kv_cache.py``, ``hw/mem_reader.py``): one fetch
  at a time, chosen in the fetcher's priority order (the V prefetch after a K fetch, a waiting want, a
  descriptor or table read, the next query block's Q prefetch, the hinted next kept block); the cache's LRU
  decisions (:func:`kv_cache_fetches`, the same rules as :func:`paro.sw.golden.kv_cache`) and its eviction
  time (one cycle with a free slot, a scan of every slot without).
* **Memory** (:class:`Memory`): the benches' AXI4 RAM serves bursts in turn; each burst's first beat comes
  ``read_latency`` cycles after its turn begins, then its beats at ``bytes_per_cycle`` (at most one data beat
  a cycle). Writes never hold the engine up beyond their own beats.

* **Speculation** (``hw/spec_control.py``, heads with ``SPEC``): the K pooling pass (one fetch per key block,
  after the meta wants in the fetcher's order, the next asked the cycle after one is served), then per query
  block, once its Q rows and bitmap row are on chip and the previous row is done, ``n (d / spec_lanes + 2) +
  n**2 + 4n`` cycles (``n`` key blocks: the speculator's pooled products, then the speculation unit's masses
  and classes); the controller walks a row only after its speculation (``SPEC``).

It reports cycles per head (the per-head ``CYCLES`` counter: from its descriptor read to its store) and for
the start (``CYCLES``: every busy cycle), bytes read and written, and where the cycles of each head go
(``breakdown``: ``compute`` is the ideal, the rest are the costs beyond it). The model covers the modes the
engine runs (bitwidths {0, 4, 8}); a configuration the engine refuses is refused here with the same message.
"""

import dataclasses

import numpy as np

from paro.config import PACKING

from .contract import (BURST_BOUNDARY, OUTPUT_CODE_BYTES, TABLE_RECORD_BYTES, bitmap_stride, block_counters,
                       check_engine_config, descriptor_lines, descriptor_stride, layer_memory_map)
from .golden import LUT_BLOCK, LUT_QK_BITS, axi_bursts

__all__ = ["Memory", "HeadCycles", "head_cycles", "layer_cycles", "kv_cache_fetches", "spec_row_cycles",
           "BREAKDOWN", "FEED_STAGES", "SCORE_STAGES", "SHIFT_STAGES"]

#: Stages of the operand feed (``hw/operand_feed.py``): a beat reaches the array this many cycles after its fire,
#: and while a tile's last beat waits for the array the next tile's beats fill the stages behind it.
FEED_STAGES = 2
#: Registers of the score unit (``hw/score_unit.py``) a drained QK^T beat passes before it is written: pass A
#: ends (``A_WAIT``) this many cycles after the last drained beat.
SCORE_STAGES = 2
#: Cycles of the controller's ``B_SHIFT`` (``hw/controller.py``): the segment shift's stages
#: (``hw/segment_shift.py``) before a pass-B block's first beat; later query groups' shifts are ready in time.
SHIFT_STAGES = 3

#: Where a head's cycles go: ``compute`` (kept-block MACs over the array's peak: the ideal) and the costs
#: beyond it, in the order the model charges a wait to them.
BREAKDOWN = {
    "compute": "array input beats of kept blocks and the LUT path's chunks of LUT-path blocks (the ideal cycles)",
    "array_drain": "tiles shorter than the array's drain (a tile's last beat waits for the previous drain), "
                   "and a block's first beat through the feed's two stages",
    "block_switch": "one A_NEXT / B_NEXT cycle between kept blocks",
    "scheduler": "the scheduler still scanning 0-bit blocks when the controller wants the next kept block",
    "kv_fetch": "waiting for K or V rows from memory (cache misses not hidden by the hint)",
    "q_fetch": "waiting for a query block's Q rows and bitmap row",
    "pass_switch": "the array, tile queue and accumulator draining at the ends of pass A and pass B",
    "output": "waiting for the output stage and its write-back (the next pass B, or the head's last block)",
    "head_setup": "the head's descriptor and block table reads, and the first query block's start",
    "speculation": "waiting for a query block's speculation (SPEC heads: the K pooling pass and the first row)",
    "lut": "LUT-path blocks (SPEC 3 heads) beyond their chunks: the array draining before one, the LUT path's "
           "fill and its drain to the accumulator",
}

#: Fixed cycles of the sequencer and controller state changes (from the RTL's state machines).
CHECK_LATENCY = 3          # hw/descriptor.py: cycles the descriptor checks take


@dataclasses.dataclass(frozen=True)
class Memory:
    """The memory the engine reads: ``read_latency`` cycles from a burst's turn to its first beat (bursts served
    in turn, as in the benches' RAM models), and ``bytes_per_cycle`` of read bandwidth for this engine (``None``:
    one AXI data beat a cycle, the bus's peak)."""
    read_latency: int = 0
    bytes_per_cycle: float = None

    def beat_cycles(self, config, nbytes):
        """Cycles ``nbytes`` take on the data channel."""
        beat = config.axi_data_bits // 8
        if self.bytes_per_cycle is None or self.bytes_per_cycle >= beat:
            return -(-nbytes // beat)
        return int(np.ceil(nbytes / self.bytes_per_cycle))


@dataclasses.dataclass
class HeadCycles:
    """One head's modelled run: ``cycles`` (the per-head counter), ``breakdown`` (category -> cycles, summing
    to ``cycles``), bytes, the counters the engine keeps, and ``row_cycles``: per query block the cycles from its
    ``LOAD_Q`` to the next block's (the last: to the head's store)."""
    cycles: int
    breakdown: dict
    bytes_read: int
    bytes_written: int
    kept8: int
    kept4: int
    kept2: int
    skipped: int
    kv_fetches: int
    kv_wants: int
    row_cycles: list = dataclasses.field(default_factory=list)
    spec_busy: int = 0
    spec_wait: int = 0


def _bursts(config, address, nbytes):
    """How many bursts a read takes (:func:`paro.sw.golden.axi_bursts`)."""
    return len(axi_bursts(address, nbytes, config))


def kv_cache_fetches(wants, slots):
    """The block cache's decisions for a head's K/V wants (``(kind, block)``, kind ``"K"`` or ``"V"``, in want
    order; the rules of :func:`paro.sw.golden.kv_cache`): per want ``(fetched, evict)``, where ``fetched``
    lists the kinds read for it (a K fetch brings its V) and ``evict`` is ``None`` (the block has a slot),
    ``"free"`` (a free slot) or ``"scan"`` (the least recently wanted slot, found by a scan)."""
    tag, have, used, now, decisions = [None] * slots, [0] * slots, [0] * slots, 0, []
    where, filled = {}, 0
    for kind, block in wants:
        bit = 1 if kind == "K" else 2
        slot = where.get(block)
        evict = None
        if slot is None:
            if filled < slots:
                slot, evict, filled = filled, "free", filled + 1
            else:
                slot, evict = min(range(slots), key=used.__getitem__), "scan"
                del where[tag[slot]]
            tag[slot], have[slot], where[block] = block, 0, slot
        fetched = ()
        if not have[slot] & bit:
            fetched = ("K", "V") if kind == "K" and not have[slot] & 2 else (kind,)
            have[slot] |= 3 if len(fetched) == 2 else bit
        used[slot], now = now, now + 1
        decisions.append((fetched, evict))
    return decisions


def _job(cost, early_from=None, early_priority=5, want_from=None, priority=None, delay=0):
    """A fetch job: from ``early_from`` it may start as a prefetch or hinted fetch (``early_priority``: 4 for the
    Q prefetch, 5 for a hint), from ``want_from`` as a want (priority 2); ``priority`` fixes it (1: the V
    prefetch after a K fetch, 3: a speculation pool want). ``then``: a job that becomes ready ``delay`` cycles
    after this one is done."""
    return {"cost": cost, "early_from": early_from, "early_priority": early_priority, "want_from": want_from,
            "priority": priority, "done": None, "then": None, "delay": delay}


class _Fetcher:
    """The fetcher's timeline: one fetch at a time, the next one chosen when it is idle, by priority among the
    jobs (:func:`_job`) then ready."""

    def __init__(self, start):
        self.free = start          # first cycle the fetcher is idle and decides
        self.jobs = []

    def add(self, cost, **when):
        job = _job(cost, **when)
        self.jobs.append(job)
        return job

    def _priority(self, job, t):
        if job["priority"] is not None:
            return job["priority"]
        if job["want_from"] is not None and t >= job["want_from"]:
            return 2
        return job["early_priority"]

    @staticmethod
    def _ready_from(job):
        times = [x for x in (job["early_from"], job["want_from"]) if x is not None]
        return min(times) if times else None

    def run_until(self, target):
        """Serve jobs in the fetcher's order until ``target`` is done; return its completion cycle."""
        while target["done"] is None:
            waiting = [(self._ready_from(j), j) for j in self.jobs]
            waiting = [(r, j) for r, j in waiting if r is not None]
            t = max(self.free, min(r for r, _ in waiting))
            ready = [j for r, j in waiting if r <= t]
            job = min(ready, key=lambda j: self._priority(j, t))
            self.jobs.remove(job)
            job["done"] = self.free = t + job["cost"]
            if job["then"]:
                follow = job["then"]
                follow["early_from"] = self.free + follow["delay"]
                self.jobs.append(follow)
        return target["done"]


def _fetch_cost(config, memory, address, nbytes, evict=None):
    """Cycles from the fetcher's deciding cycle to its next idle cycle (when the rows are usable) for one read."""
    extra = {None: 0, "free": 1, "scan": config.kv_cache_blocks}[evict]
    return 4 + extra + _bursts(config, address, nbytes) * memory.read_latency + memory.beat_cycles(config, nbytes)


def spec_row_cycles(config, n_blocks):
    """Cycles from the speculator taking a query block's row to the speculation unit's last class beat
    (``hw/speculator.py``, ``hw/speculation.py``): per key block a read, ``d / spec_lanes`` product beats and a
    score beat, then two cycles a block for the masses and ``n + 2`` a block for the classes."""
    n = n_blocks
    return n * (config.head_dim // config.spec_lanes + 2) + n * n + 4 * n


def head_cycles(config, bitmap, addresses, desc_address, rows=None, memory=Memory(), start=0, spec=False):
    """Model one head (its ``bitmap``, query blocks ``rows``, regions at ``addresses``, descriptor at
    ``desc_address``) from the cycle its
    sequencer enters ``RUN_DESC`` (``start``); return ``(HeadCycles, end)`` where ``end`` is the cycle of its
    ``head_store``. ``spec``: the head runs block speculation (``SPEC``); ``bitmap`` is then the speculated one
    (:func:`paro.sw.golden.spec_control`), what the engine walks."""
    R, C, B, d = config.rows, config.cols, config.block_size, config.head_dim
    bitmap = np.asarray(bitmap)
    n = bitmap.shape[1]
    rows = range(bitmap.shape[0]) if rows is None else rows
    stall = dict.fromkeys(BREAKDOWN, 0)
    drain = {ppc: R + C - 1 + config.pe_stages + C * ppc for ppc in (1, 2, 4)}   # per products a cycle: drain period
    lines = {"bitmap": -(-n // d), "table": -(-TABLE_RECORD_BYTES * n // d)}
    desc_bytes = descriptor_lines(config) * d
    fetcher = _Fetcher(start)

    def meta(address, nbytes, t):
        job = fetcher.add(_fetch_cost(config, memory, address, nbytes), want_from=t)
        return fetcher.run_until(job)

    bytes_read = desc_bytes + lines["table"] * d
    t = meta(desc_address, desc_bytes, start)                        # RUN_DESC: ready when meta_done
    t = meta(addresses["TABLE_ADDR"], lines["table"] * d, t + 1)  # RUN_TABLE; the run pulse at its ready
    stall["head_setup"] += t + 1 - start
    now = t + 1                                            # the controller's LOAD_Q of the first query block
    q_bytes, bitmap_bytes = B * d, lines["bitmap"] * d
    spec_free = spec_wait = 0
    if spec:                       # the K pooling pass: one want a key block, each the cycle after the last's ready
        pools = [_job(_fetch_cost(config, memory, addresses["K_ADDR"] + j * B * d, B * d), priority=3, delay=1)
                 for j in range(n)]
        pools[0]["early_from"] = now
        fetcher.jobs.append(pools[0])
        for first, then in zip(pools, pools[1:]):
            first["then"] = then
        bytes_read += n * B * d
        spec_cycles = spec_row_cycles(config, n)

    def q_job(block, early_from=None):
        cost = 7 + (_bursts(config, addresses["Q_ADDR"] + block * B * d, q_bytes)
                    + _bursts(config, addresses["BITMAP_ADDR"] + block * bitmap_stride(config, n), bitmap_bytes)
                    ) * memory.read_latency + memory.beat_cycles(config, q_bytes) + memory.beat_cycles(config, bitmap_bytes)
        return fetcher.add(cost, early_from=early_from, early_priority=4)

    # K/V wants in the controller's order, and the cache's decisions for them.
    kept_rows = [[(int(j), int(bitmap[i, j])) for j in np.flatnonzero(bitmap[i])] for i in rows]
    wants = [(kind, j) for kept in kept_rows for kind in ("K", "V") for j, _ in kept]
    decisions = iter(kv_cache_fetches(wants, config.kv_cache_blocks))
    kv_fetches = 0

    def kv_job(kind, block, decision, hint_from):
        """The fetch job (or None) for a want of ``kind`` rows of ``block``; a K fetch is followed by its V
        prefetch (or one idle cycle when the V rows are already there)."""
        nonlocal kv_fetches, bytes_read
        fetched, evict = decision
        if not fetched:
            return None
        address = addresses[f"{fetched[0]}_ADDR"] + block * B * d
        job = fetcher.add(_fetch_cost(config, memory, address, B * d, evict),
                          early_from=hint_from if config.kv_cache_blocks > 1 else None)
        kv_fetches += len(fetched)
        bytes_read += len(fetched) * B * d
        if kind == "K":
            v_cost = (_fetch_cost(config, memory, addresses["V_ADDR"] + block * B * d, B * d)
                      if len(fetched) == 2 else 1)
            job["then"] = _job(v_cost, priority=1)
        return job

    L = -10**9                       # cycle the array took the last beat of the latest tile
    G = drain[1]                     # that tile's drain period
    out_idle = -10**9                # cycle the previous query block's output stage and write-back are idle
    prefetch = None                  # the armed Q prefetch job of the next query block
    counts = {"kept8": 0, "kept4": 0, "kept2": 0, "skipped": 0}
    out_words = B * d // R

    def charge(cursor, steps):
        for category, time in steps:
            if time > cursor:
                stall[category] += time - cursor
                cursor = time
        return cursor

    row_starts = []
    for index, (i, kept) in enumerate(zip(rows, kept_rows)):
        row_starts.append(now)
        # LOAD_Q: the Q rows and the bitmap row (prefetched, or wanted now).
        job = prefetch or q_job(i)
        job["want_from"] = now
        ready = fetcher.run_until(job) if job["done"] is None else job["done"]
        s = hit = charge(now, [("q_fetch" if index else "head_setup", ready)])     # the Q want's hit
        prefetch = q_job(i + 1, early_from=hit + 1) if i + 1 < rows.stop else None
        if spec:                    # SpecControl: row i once pooled (ROW 2 cycles after the last pool) and on chip
            if not index:
                spec_free = fetcher.run_until(pools[-1]) + 2
            spec_start = max(spec_free, job["done"])
            spec_free = spec_start + spec_cycles + 1      # row_ready passes row i; SpecControl back in ROW
            if spec_free > hit:                           # LOAD_Q -> SPEC, the walk once row_ready passes i
                s = charge(hit, [("speculation", max(hit + 1, spec_free))])
                spec_wait += s - hit
        for name, value in block_counters(bitmap[i]).items():
            counts[name.lower()] += value
        row_decisions = [next(decisions) for _ in range(2 * len(kept))]
        cursor = w = s
        for pass_b in (0, 1):
            # The scheduler starts a walk at `start`; block at column j is offered at start + 2 + j.
            start_cycle = s if not pass_b else w
            state = start_cycle + 1                # A_NEXT / B_NEXT entered
            taken = None
            hint_from = None
            for k, (j, bits) in enumerate(kept):
                lut = bits == LUT_BLOCK
                ppc = 1 << PACKING[LUT_QK_BITS if lut else bits]
                avail = start_cycle + 2 + j if k == 0 else taken + (j - kept[k - 1][0])
                job = kv_job("V" if pass_b else "K", j, row_decisions[pass_b * len(kept) + k], hint_from)
                # B_NEXT wants and takes a LUT-path block only once the array, feed and accumulator are idle
                idle = L + G + 1 if pass_b and lut else -10**9
                ready = -10**9
                if job is not None:
                    job["want_from"] = max(state, avail, idle)
                    ready = fetcher.run_until(job)
                taken = max(state, avail, ready, idle)
                first = charge(cursor, [("block_switch", state + 1), ("scheduler", avail + 1), ("lut", idle + 1),
                                        ("kv_fetch", ready + 1)])
                if pass_b:       # B_SHIFT: the first query group's segment shifts
                    first = charge(first, [("block_switch", first + SHIFT_STAGES)])
                hint_from = taken + (kept[k + 1][0] - j) if k + 1 < len(kept) else None
                if pass_b and lut:
                    # the LUT path takes the first beat two cycles after its fire; its last accumulator beat
                    # (tests/test_lut_path.py), then B_LUT until the path and the accumulator are idle
                    chunks, entries = B * B * d // config.lut_lanes, C * d // config.lut_lanes
                    last_beat = first + 2 + chunks + 4 - entries + C * d // R
                    stall["compute"] += chunks
                    cursor = charge(first + chunks, [("lut", last_beat + 2)])
                    state = last_beat + 3
                    continue
                if pass_b:       # per query group d/R PV tiles of B beats, back to back across the groups
                    tiles, depth = (B // (C * ppc)) * (d // R), B
                else:            # per query group and key group a QK^T tile of d beats
                    tiles, depth = (B // R) * (B // (C * ppc)), d
                period = max(depth, drain[ppc])
                # a beat reaches the array FEED_STAGES cycles after its fire
                L_first = max(first + depth - 1 + FEED_STAGES, L + G)
                stall["compute"] += tiles * depth
                stall["array_drain"] += (L_first - first - depth) + (tiles - 1) * (period - depth)
                last_fire = (first + depth - 1 if tiles == 1
                             else L_first + (tiles - 2) * period + depth - FEED_STAGES)
                L, G = L_first + (tiles - 1) * period, drain[ppc]
                cursor = L
                state = last_fire + 1
            end_seen = max(state, taken + (n - kept[-1][0]))
            if not pass_b:
                # A_WAIT: the array and tile queue drained, the score unit's two registers empty (two cycles
                # after the last drained beat), the previous output stage idle.
                w = charge(cursor, [("scheduler", end_seen + 1), ("pass_switch", L + G + SCORE_STAGES),
                                    ("output", out_idle)])
                cursor = w
            else:
                # B_WAIT: drained and the accumulator's last write done; the output stage starts.
                w2 = charge(cursor, [("scheduler", end_seen + 1), ("pass_switch", L + G + 1)])
                out_idle = w2 + out_words + 4 + config.recip_stages     # + the reciprocal divider's pipeline
                now = charge(w2, [("pass_switch", w2 + 1)])   # out_start, then LOAD_Q of the next block
    end = charge(now, [("output", out_idle)])          # OUT: the last block's output written; head_busy falls
    head_store = end + 1
    stall["head_setup"] += 1
    cycles = head_store - start
    breakdown = {k: int(v) for k, v in stall.items()}
    written = len(rows) * B * d * OUTPUT_CODE_BYTES
    bytes_read += len(rows) * (q_bytes + bitmap_bytes)
    return HeadCycles(cycles=int(cycles), breakdown=breakdown, bytes_read=int(bytes_read), bytes_written=written,
                      kv_fetches=kv_fetches, kv_wants=len(wants), **counts,
                      row_cycles=np.diff(row_starts + [head_store]).tolist(),
                      spec_busy=int(spec_free - 1 - t) if spec else 0, spec_wait=int(spec_wait)), head_store


def layer_cycles(config, bitmaps, rows=None, memory=Memory(), specs=None):
    """Model one engine start of heads with ``bitmaps`` (each computing query blocks ``rows``: a range, or a list
    of one range per head) in the contract's default memory layout; return ``(totals, per_head)``: totals
    ``cycles`` (every busy cycle of the start), ``bytes_read``, ``bytes_written``; per head :class:`HeadCycles`.
    ``specs``: per head whether it runs block speculation (its bitmap then the speculated one)."""
    check_engine_config(config)          # refuses what the engine does not run
    blocks = [np.asarray(b).shape[1] for b in bitmaps]
    desc_addr, maps = layer_memory_map(config, blocks)
    d = config.head_dim
    desc_bytes = descriptor_lines(config) * d
    t = 1                                                # CHECK_LIST at 0, then CHECK_READ per head
    for h in range(len(bitmaps)):
        t += _fetch_cost(config, memory, desc_addr + h * descriptor_stride(config), desc_bytes) + 1 + CHECK_LATENCY
    per_head = []
    seen = {}       # a head's run depends only on its bitmap and where its reads cross burst boundaries
    head_rows = rows if isinstance(rows, list) else [rows] * len(bitmaps)
    specs = specs or [False] * len(bitmaps)
    for h, (bitmap, addresses, rows, spec) in enumerate(zip(bitmaps, maps, head_rows, specs)):
        t += 1                                           # RUN_START
        desc_address = desc_addr + h * descriptor_stride(config)
        bitmap = np.asarray(bitmap)
        key = (bitmap.shape, bitmap.tobytes(), rows, bool(spec), desc_address % BURST_BOUNDARY,
               tuple(a % BURST_BOUNDARY for a in addresses.values()))
        if key not in seen:
            head, store = head_cycles(config, bitmap, addresses, desc_address, rows=rows, memory=memory, start=t,
                                      spec=bool(spec))
            seen[key] = (head, store - t)
        head, duration = seen[key]
        per_head.append(head)
        t += duration + 1
    totals = {"cycles": t + 1, "bytes_read": len(bitmaps) * desc_bytes + sum(h.bytes_read for h in per_head),
              "bytes_written": sum(h.bytes_written for h in per_head)}
    return totals, per_head
