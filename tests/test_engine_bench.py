"""The attention engine's cocotb bench (``sim/test_engine.py``) on whole layers of real plans, bit for bit
against ``sw.golden``: mixed 0/4/8-bit, dense 8-bit and one-kept-block heads in one start, the engine's own
refusal of bad descriptors, and a ``small`` head in the fast mode."""

import json

import numpy as np
import pytest

from paro.errors import ParoError
from paro.flows.cli import main
from paro.flows.simulate import run_layers
from paro.sw.contract import EngineLayer, check_layer, layer_memory_map
from paro.sw.plan import load_plan
from paro.config import AcceleratorConfig
from paro.sw import golden
from paro.sw.cycles import layer_cycles
from paro.sw.program import engine_layer, engine_program, plan_workload, random_layer


def _tiny_plan(tmp_path):
    """A tiny plan for an engine whose K/V cache holds 3 of the head's 6 key blocks: rows evict and refetch."""
    path = tmp_path / "tiny.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "--kv-cache-blocks", "3", "-o", str(path)]) == 0
    return load_plan(path)


#: The tiny-config Verilator benches share one build folder (the same tag as ``paro simulate``): one worker
#: runs them in turn, so the engine's C++ is compiled once.
TINY_VERILATOR = pytest.mark.xdist_group("engine-tiny-verilator")


def _tiny_layer(plan, bitmaps):
    """One start of the tiny plan's heads 0.. with the given bitmaps (``None``: the plan's)."""
    workload = plan_workload(plan)
    desc_addr, maps = layer_memory_map(plan.config, [plan.bitmap.shape[1]] * len(bitmaps))
    return EngineLayer(desc_addr, [engine_program(plan, head, bitmap=bitmap, workload=workload, addresses=addresses)
                                   for head, (bitmap, addresses) in enumerate(zip(bitmaps, maps))])


@TINY_VERILATOR
def test_engine_tiny_layer_and_refused_descriptors(simulator, tmp_path):
    """Four tiny heads in one start (mixed, all-8-bit dense, one kept block per row, every bitwidth), each
    head's counters read back after it; then three layers the engine itself must refuse, nothing written: a
    descriptor with zero tokens (head 1), a misaligned K address (head 0) and speculation asked of a build
    without it (head 0, code 10)."""
    plan = _tiny_plan(tmp_path)
    nb = plan.bitmap.shape[1]
    one_block = np.zeros((nb, nb), dtype=np.uint8)
    one_block[np.arange(nb), (np.arange(nb) + 1) % nb] = np.where(np.arange(nb) % 2, 4, 8)
    layer = _tiny_layer(plan, [None, np.full((nb, nb), 8, dtype=np.uint8), one_block, None])
    assert {0, 4, 8} <= set(np.unique(layer.heads[0].bitmap).tolist()), "the mixed plan must use every bitwidth"
    zero_tokens, misaligned, speculating = _tiny_layer(plan, [None, None]), _tiny_layer(plan, [None]), \
        _tiny_layer(plan, [None])
    zero_tokens.heads[1].descriptor["N_TOKENS"] = 0
    misaligned.heads[0].descriptor["K_ADDR"] += 64
    speculating.heads[0].descriptor.update(SPEC=1, SPEC_IMPORTANT=1 << 15, SPEC_NEGLIGIBLE=0)
    with pytest.raises(ParoError, match="SPEC = 1 asks for block speculation, which this engine was built without"):
        check_layer(plan.config, speculating)
    [(totals, per_head), _, _, _] = run_layers(plan.config, [layer, zero_tokens, misaligned, speculating], simulator,
                                               expect_errors=[None, (3, 1), (7, 0), (10, 0)])
    assert totals["HEADS_DONE"] == 4 and per_head[1]["KEPT8"] == nb * nb and per_head[1]["SKIPPED"] == 0
    assert per_head[2]["KEPT8"] + per_head[2]["KEPT4"] == nb
    assert totals["CYCLES"] > sum(h["CYCLES"] for h in per_head)           # the check pass is in the total


@pytest.mark.xdist_group("engine-small-fast")       # one Verilator build, shared with tests/test_cycles.py
def test_engine_small_head_fast_mode(verilator, tmp_path):
    """A head of the small workload calibrated at density 0.25 (~1.8M cycles) in the fast run mode (the C++
    Verilator harness), on a build whose score buffer holds 512 of the 1,088 tokens' keys per query row (rows
    keep at most 6 blocks) and whose K/V cache holds 8 of the 17 key blocks; then one wrong expected code makes
    the same run fail."""
    path = tmp_path / "small.npz"
    assert main(["calibrate", "--workload", "small", "--heads", "2", "--density", "0.25", "--avg-bits", "1.5",
                 "--max-kept-keys", "512", "--kv-cache-blocks", "8", "-o", str(path)]) == 0
    plan = load_plan(path)
    assert plan.config.max_kept_keys == 512 < plan.bitmap.shape[1] * plan.config.block_size
    assert plan.config.kv_cache_blocks == 8 < plan.bitmap.shape[1]
    layer = engine_layer(plan, [1])          # a temporal head, reordered HWF
    stats = []
    [(totals, [counters])] = run_layers(plan.config, [layer], verilator, gap=0, tag="small", fast=True, stats=stats)
    assert counters["KEPT4"] > 0 and counters["KEPT8"] > 0
    assert counters["CYCLES"] > 1_600_000 and abs(stats[0]["run_cycles"] - totals["CYCLES"]) <= 4
    assert stats[0]["cycles_per_second"] > 0
    prog = layer.heads[0]
    prog.codes = prog.codes.copy()
    prog.codes[-1, -1] += 1
    with pytest.raises(ParoError) as error:
        run_layers(plan.config, [layer], verilator, gap=0, tag="small", fast=True)
    last = prog.codes.shape[0] - 1
    assert str(error.value).startswith("the engine on verilator (fast mode) did not match the golden model: "
                                       f"layer 0, head 0, output query {last}, head dims 60..63: got [")


@TINY_VERILATOR
def test_engine_mismatch_is_reported(verilator, tmp_path):
    """A single wrong expected code makes the run fail: bit-exactness is checked, not assumed."""
    plan = _tiny_plan(tmp_path)
    layer = engine_layer(plan, [0])
    prog = layer.heads[0]
    prog.codes = prog.codes.copy()
    prog.codes[5, 3] += 1
    with pytest.raises(ParoError) as error:
        run_layers(plan.config, [layer], verilator)
    message = str(error.value)
    assert message.startswith("the engine on verilator did not match the golden model: layer 0, head 0, "
                              f"output query 5, head dims 0..{plan.config.rows - 1}: got [")
    got, golden = (json.loads(part.split("]")[0] + "]") for part in message.split(": got ")[1].split(", golden "))
    assert golden[3] == got[3] + 1 and golden[:3] == got[:3]


def test_engine_one_cache_slot(icarus):
    """A K/V cache of one slot: the Q buffer (two query blocks) is then the deepest buffer the fetcher writes, and
    odd query blocks' Q rows must land in its second half (they once wrapped onto the first: wrong codes from
    query block 1 on). Three query blocks, mixed 4/8-bit, bit-exact with bus pauses."""
    config = AcceleratorConfig(rows=4, cols=4, block_size=16, head_dim=32, max_seq_len=1024, kv_cache_blocks=1)
    bitmap = np.array([[8, 4, 0], [0, 8, 8], [4, 0, 4]], dtype=np.uint8)
    [(totals, [counters])] = run_layers(config, [random_layer(config, [bitmap], seed=7)], icarus, gap=0.2)
    assert counters["KEPT8"] == 3 and counters["KEPT4"] == 3 and totals["HEADS_DONE"] == 1


@pytest.mark.parametrize("pe_stages", [0, 2], ids=["pe-stages-0", "pe-stages-2"])
def test_engine_every_bitwidth_in_one_head(simulator, pe_stages):
    """A {0, 2, 4, 8} build (four crumbs a PE word, 4C P lanes), with single-cycle and with pipelined PEs: a
    head whose every query row mixes 0-, 2-, 4- and 8-bit blocks and a head of 2-bit blocks only, in one
    start, bit-exact with random stalls on every stream, and the per-head counters count each bitwidth."""
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=128, axi_data_bits=64,
                               kv_cache_blocks=3, bitwidths=(0, 2, 4, 8), pe_stages=pe_stages)
    rng = np.random.default_rng(20261129)
    mixed = np.array([rng.permutation([0, 2, 4, 8]) for _ in range(4)], dtype=np.uint8)
    two_bit = np.full((2, 2), 2, dtype=np.uint8)
    print(f"seed 20261129, mixed bitmap {mixed.tolist()}")
    [(totals, counters)] = run_layers(config, [random_layer(config, [mixed, two_bit], seed=11)], simulator, gap=0.2)
    assert totals["HEADS_DONE"] == 2
    assert [(c["KEPT8"], c["KEPT4"], c["KEPT2"], c["SKIPPED"]) for c in counters] == [(4, 4, 4, 4), (0, 0, 4, 0)]


def test_pipelined_pe_adds_only_drain_latency_and_the_model_follows(verilator):
    """The same layer on a 2-stage-PE build and on a single-cycle build (fast mode): both bit-exact, each in
    exactly the cycle model's cycles; the pipelined run is longer by the added drain latency only, at most
    two cycles per array tile."""
    runs = {}
    for stages in (0, 2):
        config = AcceleratorConfig(rows=2, cols=4, block_size=16, head_dim=16, max_seq_len=128, axi_data_bits=64,
                                   pe_stages=stages)
        bitmap = np.array([[8, 4, 0, 8], [0, 8, 4, 4], [4, 0, 8, 0], [8, 8, 8, 8]], dtype=np.uint8)
        [(totals, [counters])] = run_layers(config, [random_layer(config, [bitmap], seed=5)], verilator, gap=0,
                                            tag="pipelined", fast=True)
        modelled, [head] = layer_cycles(config, [bitmap])
        assert counters["CYCLES"] == head.cycles and totals["CYCLES"] == modelled["cycles"], stages
        runs[stages] = counters["CYCLES"]
    tiles = len(golden.engine_controller(bitmap, config))
    print(f"pe_stages 0: {runs[0]:,} cycles, 2: {runs[2]:,} ({tiles} tiles)")
    assert 0 < runs[2] - runs[0] <= 2 * tiles


def test_engine_block_speculation(simulator, tmp_path):
    """SimPicker's block speculation in the engine (a ``spec_lanes`` build): a dense tiny head (every block
    8-bit, SimPicker alone) speculated with unimportant blocks on the full path (``SPEC`` 1), the plan's head
    (SimPicker within PARO's bitmap) with unimportant blocks at 4 bits (``SPEC`` 2), and a head without
    speculation, in one start with random stalls; outputs and counters bit-exact against
    ``golden.spec_control`` -> ``attention_head``. Speculation must skip blocks of the dense head and lower
    some of the plan head's 8-bit blocks, and the engine computes exactly the speculated bitmaps."""
    path = tmp_path / "tiny.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "--spec-lanes", "8", "-o", str(path)]) == 0
    plan = load_plan(path)
    nb, one = plan.bitmap.shape[1], 1 << golden.SPEC_FRAC_BITS
    workload = plan_workload(plan)
    desc_addr, maps = layer_memory_map(plan.config, [nb] * 3)
    specs = [(round(0.8 * one), round(0.1 * one), golden.SPEC_SKIP_ONLY),
             (round(0.6 * one), round(0.02 * one), golden.SPEC_LOW_BITS), None]
    bitmaps = [np.full((nb, nb), 8, dtype=np.uint8), None, None]
    layer = EngineLayer(desc_addr, [engine_program(plan, head, bitmap=bitmap, workload=workload, addresses=addresses,
                                                   spec=spec)
                                    for head, (bitmap, addresses, spec) in enumerate(zip(bitmaps, maps, specs))])
    dense = layer.heads[0]
    skipped = int((dense.speculated == 0).sum())
    print(f"dense head: speculation skips {skipped} of {nb * nb} blocks")
    assert 0 < skipped < nb * nb - nb
    lowered = (layer.heads[1].bitmap == 8) & (layer.heads[1].speculated == 4)
    print(f"plan head: speculation lowers {int(lowered.sum())} 8-bit blocks to 4 bits")
    assert lowered.any()
    [(totals, per_head)] = run_layers(plan.config, [layer], simulator, gap=0.2, tag="engine-spec")
    assert per_head[0]["SKIPPED"] == skipped and per_head[0]["KEPT8"] == nb * nb - skipped
    assert per_head[1]["KEPT4"] == int((layer.heads[1].speculated == 4).sum())
    assert per_head[2]["SPEC_BUSY"] == 0 and per_head[0]["SPEC_WAIT"] > 0
    print("SPEC_BUSY", [h["SPEC_BUSY"] for h in per_head], "SPEC_WAIT", [h["SPEC_WAIT"] for h in per_head],
          "CYCLES", [h["CYCLES"] for h in per_head])


def test_engine_lut_path(simulator, tmp_path):
    """SimPicker's LUT path in the engine (a ``spec_lanes`` + ``lut_path`` build): a dense tiny head (SimPicker
    alone) and the plan's head (SimPicker within PARO's bitmap), both speculated with unimportant blocks on the
    LUT path (``SPEC`` 3), and a head without speculation, in one start with random stalls; outputs and
    counters bit-exact against ``golden.spec_control`` -> ``attention_head`` (LUT-path blocks by
    ``golden.lut_path``), and the cycles equal the cycle model's."""
    path = tmp_path / "tiny.npz"
    assert main(["calibrate", "--workload", "tiny", "--block-size", "16", "--density", "0.5", "--avg-bits", "3",
                 "--spec-lanes", "8", "--lut-path", "--lut-lanes", "16", "-o", str(path)]) == 0
    plan = load_plan(path)
    nb, one = plan.bitmap.shape[1], 1 << golden.SPEC_FRAC_BITS
    workload = plan_workload(plan)
    desc_addr, maps = layer_memory_map(plan.config, [nb] * 3)
    specs = [(round(0.7 * one), round(0.05 * one), golden.SPEC_LUT_PATH),
             (round(0.6 * one), 0, golden.SPEC_LUT_PATH), None]
    bitmaps = [np.full((nb, nb), 8, dtype=np.uint8), None, None]
    layer = EngineLayer(desc_addr, [engine_program(plan, head, bitmap=bitmap, workload=workload, addresses=addresses,
                                                   spec=spec)
                                    for head, (bitmap, addresses, spec) in enumerate(zip(bitmaps, maps, specs))])
    luts = [int((h.speculated == golden.LUT_BLOCK).sum()) for h in layer.heads[:2]]
    print(f"LUT-path blocks: dense head {luts[0]}, plan head {luts[1]} of {nb * nb}")
    assert all(0 < n <= nb * nb - nb for n in luts)          # a row's best block is always important
    [(totals, per_head)] = run_layers(plan.config, [layer], simulator, gap=0.2, tag="engine-lut")
    for h in range(2):
        assert per_head[h]["KEPT4"] == int(np.isin(layer.heads[h].speculated, (4, golden.LUT_BLOCK)).sum())
    print("CYCLES", [h["CYCLES"] for h in per_head])


@pytest.mark.parametrize("bitwidths, k4_cut, k2_cut", [((0, 4, 8), "leading-zero", "block"),
                                                    ((0, 2, 4, 8), "leading-zero", "leading-zero"),
                                                    ((0, 2, 4, 8), "round", "leading-zero")],
                         ids=["048-k4", "0248-k4-k2", "0248-k2"])
def test_engine_leading_zero_cuts(simulator, bitwidths, k4_cut, k2_cut):
    """Builds with leading-zero cuts: 4-bit (``k4_cut``) and 2-bit (``k2_cut``) blocks' K cut per element at
    its leading one (mantissas and exponents through the feed, array and PEs, scores unshifted) next to blocks
    of the other bitwidths, bit-exact with random stalls on every stream."""
    import dataclasses
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=128, axi_data_bits=64,
                               kv_cache_blocks=3, bitwidths=bitwidths, k4_cut=k4_cut, k2_cut=k2_cut)
    rng = np.random.default_rng(20261129)
    codes = [b for b in bitwidths]
    mixed = np.array([rng.permutation(codes) for _ in range(len(codes))], dtype=np.uint8)
    uniform = [np.full((2, 2), bits, dtype=np.uint8) for bits in bitwidths if bits in (2, 4)]
    print(f"seed 20261129, bitmap {mixed.tolist()}")
    layer = random_layer(config, [mixed, *uniform], seed=13)
    [(totals, counters)] = run_layers(config, [layer], simulator, gap=0.2, tag="klz")
    assert totals["HEADS_DONE"] == 1 + len(uniform)
    assert [c["KEPT2"] + c["KEPT4"] for c in counters[1:]] == [4] * len(uniform)
    # the cuts change the integers: the same layer's expected codes under the default cuts differ
    default = random_layer(dataclasses.replace(config, k4_cut="round", k2_cut="block"), [mixed, *uniform], seed=13)
    for head, other in zip(layer.heads, default.heads):
        assert np.array_equal(head.k8, other.k8)
    cut = [config.k_cuts.get(int(head.bitmap.max())) == "leading-zero" for head in layer.heads[1:]]
    same = [np.array_equal(head.codes, other.codes) for head, other in zip(layer.heads, default.heads)]
    assert same == [False] + [not c for c in cut]


def test_leading_zero_cuts_keep_the_cycles(verilator):
    """The leading-zero cuts change the 4- and 2-bit blocks' integers, not their tiles: a layer on a build with
    both (fast mode) is bit-exact in exactly the cycle model's cycles and the default cuts'."""
    cycles = {}
    bitmap = np.array([[8, 4, 0, 2], [0, 2, 4, 8], [4, 0, 8, 0], [2, 4, 2, 4]], dtype=np.uint8)
    for k4_cut, k2_cut in (("leading-zero", "leading-zero"), ("round", "block")):
        config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=128, axi_data_bits=64,
                                   bitwidths=(0, 2, 4, 8), k4_cut=k4_cut, k2_cut=k2_cut)
        [(totals, [counters])] = run_layers(config, [random_layer(config, [bitmap], seed=7)], verilator, gap=0,
                                            tag=f"k-{k4_cut}-{k2_cut}", fast=True)
        modelled, [head] = layer_cycles(config, [bitmap])
        assert counters["CYCLES"] == head.cycles and totals["CYCLES"] == modelled["cycles"], k4_cut
        cycles[k4_cut] = counters["CYCLES"]
    assert cycles["leading-zero"] == cycles["round"]
