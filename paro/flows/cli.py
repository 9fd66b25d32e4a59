"""The ``paro`` command: generate, calibrate, plot, simulate, model, project, sweep, formal, synth, bench, demo.

User mistakes end with one line, ``paro: error: <what is wrong and how to fix it>``, exit status 2, and no
partial output file.
"""

import argparse
import json
import sys
from pathlib import Path

from ..config import K2_CUTS, K4_CUTS, AcceleratorConfig
from ..errors import ParoError
from ..files import atomic_write, check_writable
from ..hw.emit import TOPS, write_verilog
from ..sw.allocation import METHODS
from ..sw.calibrate import ERROR_METRICS, calibrate, fitting_seq_len
from ..sw.captures import calibrate_captures
from ..sw.plan import load_plan, save_plan, save_plan_set
from ..sw.plots import plot_plan
from ..sw.reorder import TokenLayout
from ..sw.simpicker import METHODS as SIMPICKER_METHODS
from ..sw.simpicker import UNIMPORTANT_PATHS, SimPickerParams, evaluate as evaluate_simpicker
from ..sw.workloads import make_workload
from .ablation import bench_simpicker, bench_simpicker_rtl
from .bench import bench_array, bench_engine_speed
from .calibration_speed import bench_calibration_speed
from .capture import capture_random_inputs, load_transformer   # torch and diffusers only when called
from .model import model
from .project import MODELS, SHARING, project
from .sweep import WORKLOADS, sweep
from .formal import CHECKS, formal
from .soak import soak
from .liveness import every_bitmap
from .provenance import provenance
from .simulate import simulate
from .precision import bench_precision
from .validate import bench_model_validation
from .synth import NO_PLACE_ARRAY, SYNTH_TOPS, TARGETS, synth
from .synth_sweep import SWEEP_SIZES, SWEEP_STAGES, parse_sizes, parse_stages, synth_sweep

__all__ = ["main"]


def _bitwidths(text):
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bitwidths must be a comma-separated list like 0,4,8, got {text!r}")


def _add_config_args(parser):
    defaults = AcceleratorConfig()
    parser.add_argument("--rows", type=int, default=defaults.rows, help="PE array rows R (power of two)")
    parser.add_argument("--cols", type=int, default=defaults.cols, help="PE array columns C (power of two)")
    parser.add_argument("--block-size", type=int, default=defaults.block_size, help="attention block size B")
    parser.add_argument("--head-dim", type=int, default=defaults.head_dim, help="attention head dimension d")
    parser.add_argument("--bitwidths", type=_bitwidths, default=defaults.bitwidths,
                        help="block bitwidth set, e.g. 0,4,8")
    parser.add_argument("--acc-width", type=int, default=None, help="accumulator width (default: minimum)")
    parser.add_argument("--max-seq-len", type=int, default=defaults.max_seq_len,
                        help="longest padded sequence the softmax widths (and the engine's buffers) hold")
    _add_kept_keys_arg(parser)


def _add_simpicker_args(parser):
    defaults = SimPickerParams()
    parser.add_argument("--method", choices=SIMPICKER_METHODS, default="paro",
                        help="paro (the static plan, default), simpicker (run-time speculation and token reuse "
                             "alone) or both (SimPicker within the plan); see docs/simpicker.md")
    parser.add_argument("--important-mass", type=float, default=defaults.important_mass,
                        help="SimPicker: the largest blocks making up this fraction of a row's estimated mass "
                             "take the full path")
    parser.add_argument("--negligible-mass", type=float, default=None,
                        help=f"SimPicker: the smallest blocks adding up to at most this fraction are skipped; the "
                             f"rest takes the LUT path (default {defaults.negligible_mass}; 0 with --method both, "
                             f"whose plan already skips)")
    parser.add_argument("--reuse-threshold", type=float, default=defaults.reuse_threshold,
                        help="SimPicker: a token reuses its anchor's output within this relative L2 distance "
                             "(0: no reuse)")
    parser.add_argument("--unimportant", choices=UNIMPORTANT_PATHS, default=defaults.unimportant,
                        help="SimPicker: the path of unimportant blocks: lut (the LUT FP x INT multiplier, default), "
                             "low (PARO's 4-bit mode) or full (their own bits); the engine RTL runs low and full")


def _add_kept_keys_arg(parser):
    parser.add_argument("--max-kept-keys", type=int, default=None,
                        help="keys one query-block row may keep: the score buffer's size (default: max_seq_len)")
    parser.add_argument("--kv-cache-blocks", type=int, default=None,
                        help="slots of the engine's K/V block cache, one key block each (default: max_blocks)")
    parser.add_argument("--max-heads", type=int, default=AcceleratorConfig.max_heads,
                        help="heads one engine start runs at most (descriptors in its list; calibrate raises it "
                             "to the workload's heads)")
    parser.add_argument("--pe-stages", type=int, default=AcceleratorConfig.pe_stages,
                        help="pipeline registers between each PE's multipliers and accumulators, 0..2 (for Fmax; "
                             "each adds a cycle to a tile's drain)")
    parser.add_argument("--lut-lanes", type=int, default=AcceleratorConfig.lut_lanes,
                        help="lanes of SimPicker's LUT FP x INT multiplier (INT8 operands a cycle)")
    parser.add_argument("--lut-mant-bits", type=int, default=AcceleratorConfig.lut_mant_bits,
                        help="mantissa bits of its FP operand below the leading one (7: BF16, 10: FP16)")
    parser.add_argument("--spec-lanes", type=int, default=AcceleratorConfig.spec_lanes,
                        help="multipliers of the engine's SimPicker speculation path (pooled Q x K); 0 (default) "
                             "builds the engine without speculation")
    parser.add_argument("--lut-path", action="store_true",
                        help="build SimPicker's LUT path into the engine (speculation's unimportant blocks' PV "
                             "through the LUT multiplier, --lut-lanes products a cycle; needs --spec-lanes)")
    parser.add_argument("--k4-cut", choices=K4_CUTS, default=AcceleratorConfig.k4_cut,
                        help="K of 4-bit blocks: round (nearest multiple of 16, default) or leading-zero (per "
                             "element from its leading one, with an exponent: PARO's leading-zero unit)")
    parser.add_argument("--k2-cut", choices=K2_CUTS, default=AcceleratorConfig.k2_cut,
                        help="K of 2-bit blocks: block (at the block's leading one, bit 6: multiples of 64, default) "
                             "or leading-zero (per element: the nearest power of two, with an exponent)")


def _config(args):
    return AcceleratorConfig(rows=args.rows, cols=args.cols, block_size=args.block_size, head_dim=args.head_dim,
                             bitwidths=args.bitwidths, acc_width=args.acc_width, max_seq_len=args.max_seq_len,
                             max_kept_keys=args.max_kept_keys, kv_cache_blocks=args.kv_cache_blocks,
                             max_heads=args.max_heads, pe_stages=args.pe_stages, lut_lanes=args.lut_lanes,
                             lut_mant_bits=args.lut_mant_bits, spec_lanes=args.spec_lanes, lut_path=args.lut_path,
                             k4_cut=args.k4_cut, k2_cut=args.k2_cut)


def cmd_generate(args):
    if args.top not in TOPS:
        raise ParoError(f"unknown top {args.top!r}; choose one of {', '.join(TOPS)}")
    config = _config(args)
    path, params_path = write_verilog(config, args.output, top=args.top)
    print(f"wrote {path} ({args.top}, {config.rows}x{config.cols}, acc_width {config.acc_width}) and {params_path}")


def cmd_bench(args):
    if args.which not in ("array", "calibration-speed", "engine-speed", "model-validation", "precision", "simpicker",
                          "simpicker-rtl"):
        raise ParoError(f"unknown bench {args.which!r}; choose one of: array, calibration-speed, engine-speed, "
                        f"model-validation, precision, simpicker, simpicker-rtl")
    if args.which == "calibration-speed":
        result, plot = bench_calibration_speed(args.output)
        print(f"{result['calibrate_command']}: {result['wall_seconds']:.1f} s wall, peak {result['peak_rss_mb']:.0f} "
              f"MB, {result['jobs']} jobs (target {result['target']['seconds']:.0f} s, "
              f"{result['target']['peak_rss_mb']:.0f} MB: {'met' if result['meets_target'] else 'NOT met'}); "
              f"wrote {args.output} and {plot}")
        return 0
    if args.which == "simpicker-rtl":
        result, plot = bench_simpicker_rtl(args.output, build_dir=args.build_dir)
        for row in result["rows"]:
            quality = "" if row["cosine"] is None else f", cosine {row['cosine']:.4f}, rel_l1 {row['rel_l1']:.4f}"
            print(f"{row['name']:52s} {row['cycles']:>11,} cycles ({row['speedup_vs_dense_int8']:.2f}x dense "
                  f"INT8){quality}")
        print(f"wrote {args.output} and {plot}")
        return 0
    if args.which == "simpicker":
        result, plot = bench_simpicker(args.output)
        for row in result["rows"]:
            print(f"{row['name']:24s} ideal {row['speedup_vs_dense_int8']:5.2f}x dense INT8, cosine "
                  f"{row['cosine']:.4f} (held-out {row['heldout_cosine']:.4f}), rel_l1 {row['rel_l1']:.4f}")
        print(f"wrote {args.output} and {plot}")
        return 0
    if args.which == "precision":
        result, plot = bench_precision(args.output, build_dir=args.build_dir)
        cycles = result["cycles"]
        for row in cycles["plans"]:
            print(f"head {cycles['head']}, bitwidths {row['bitwidths']} at {row['avg_bits']} bits: "
                  f"{row['cycles']:,} cycles (ideal {row['ideal_cycles']:,}), cosine {row['cosine']:.4f}")
        for row in result["quality"]["plans"]:
            print(f"layer, bitwidths {row['bitwidths']} at {row['avg_bits']:.2f} bits ({row['error_metric']}): "
                  f"rel_l1 {row['rel_l1']:.5f} ({row['rel_l1_vs_dense']:.2f}x dense), held-out "
                  f"{row['heldout_rel_l1']:.5f}")
        print(f"wrote {args.output} and {plot}")
        return
    if args.which == "model-validation":
        result, plot = bench_model_validation(args.output, points=args.points, seed=args.seed,
                                              build_dir=args.build_dir)
        summary = result["summary"]
        print(f"{result['points']} design points: max |error| {summary['max_abs_error']:.3%}, mean "
              f"{summary['mean_abs_error']:.3%}, {summary['exact_points']} exact; wrote {args.output} and {plot}")
        return
    if args.which == "engine-speed":
        if args.plan is None:
            raise ParoError("bench engine-speed needs --plan PLAN.npz (and --head, default 1)")
        result, plot = bench_engine_speed(args.plan, args.output, head=args.head, build_dir=args.build_dir)
        for mode, entry in result["modes"].items():
            print(f"{mode}: {entry['run_cycles']:,} cycles in {entry['wall_seconds']:.1f} s, "
                  f"{entry['cycles_per_second']:,.0f} cycles/s")
        runs, target = len(result["modes"]["fast"]["runs_cycles_per_second"]), result["target"]
        print(f"fast mode {result['fast_vs_cocotb']:.1f}x the cocotb bench (median of {runs} fast runs; target "
              f"{target['fast_cycles_per_second']:,} cycles/s {'met' if result['meets_target'] else 'NOT met'}); "
              f"wrote {args.output} and {plot}")
        return
    result, plot = bench_array(args.output, simulator=args.simulator, build_dir=args.build_dir)
    for size, entry in result["summary"].items():
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in entry.items() if k.endswith("products_per_cycle"))
        print(f"{size}: INT8 steady utilization {entry['int8_steady_utilization']:.3f}, "
              f"fill/drain {entry['int8_fill_drain_cycles']} cycles, {ratios}")
    print(f"wrote {args.output} and {plot}")


def _grid(text):
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"--grid must be F,H,W (three integers), got {text!r}")
    return values


def cmd_calibrate(args):

    if sum(x is not None for x in (args.workload, args.qkv, args.captures)) != 1:
        raise ParoError("give one of --workload NAME, --qkv FILE or --captures DIR (with --grid and --text-tokens)")
    layout = None
    if args.qkv is not None or args.captures is not None:
        if args.grid is None:
            raise ParoError(f"--{'qkv' if args.qkv else 'captures'} needs --grid F,H,W (and --text-tokens T if "
                            f"the files have text tokens)")
        layout = TokenLayout(*args.grid, args.text_tokens)
    params = _simpicker_params(args)
    if args.captures is not None:
        if args.method != "paro":
            raise ParoError(f"--method {args.method} evaluates one layer: calibrate a capture with --qkv FILE "
                            f"--grid F,H,W, or drop --method")
        return _calibrate_captures(args, layout)
    workload = make_workload(args.workload, qkv=args.qkv, layout=layout, seed=args.seed, heads=args.heads)
    holdout = None
    if args.holdout_sample is not None and args.holdout_qkv is not None:
        raise ParoError("give --holdout-sample (built-in workloads) or --holdout-qkv FILE, not both")
    if args.holdout_sample is not None:
        if args.workload is None:
            raise ParoError("--holdout-sample picks another sample of a built-in workload; with --qkv use "
                            "--holdout-qkv FILE")
        holdout = make_workload(args.workload, seed=args.seed, heads=args.heads, sample=args.holdout_sample)
    elif args.holdout_qkv is not None:
        holdout = make_workload(qkv=args.holdout_qkv, layout=workload.layout, heads=args.heads)
    config = _calibration_config(args, workload)
    plan, report = calibrate(workload, config, density=args.density, avg_bits=args.avg_bits,
                             allocation=args.allocation, holdout=holdout, error_metric=args.error_metric,
                             jobs=args.jobs)
    if args.method != "paro":
        report["simpicker"] = _simpicker_report(args.method, params, workload, holdout, plan, config)
    save_plan(plan, args.output)
    if args.report:
        atomic_write(args.report, json.dumps({**provenance(), **report}, indent=2) + "\n")
    print(f"density {report['density']:.3f}, avg_bits {report['avg_bits']:.2f} "
          f"(kept {report['avg_bits_kept']:.2f}), cosine {report['cosine']:.4f} "
          f"(fp mask {report['cosine_fp_mask']:.4f}, identity order {report['cosine_identity']:.4f}), "
          f"rel_l1 {report['rel_l1']:.4f} (identity order {report['rel_l1_identity']:.4f})")
    print(f"orders: {' '.join(plan.orders)}")
    if "heldout" in report:
        held = report["heldout"]
        print(f"held-out data: cosine {held['cosine']:.4f} (fp mask {held['cosine_fp_mask']:.4f}), "
              f"rel_l1 {held['rel_l1']:.4f}")
    allocation = report["allocation"]
    if "gap" in allocation:
        print(f"bit allocation: integer program objective {allocation['objective']:.6g} "
              f"({allocation['ilp']['status']}, {allocation['ilp']['seconds']:.1f} s), Lagrangian "
              f"{allocation['lagrangian_objective']:.6g} ({round(100 * allocation['gap'], 2) + 0.0:+.2f}%)")
    if "simpicker" in report:
        for name, result in (("calibration data", report["simpicker"]),
                             ("held-out data", report["simpicker"].get("heldout"))):
            if result:
                f = result["fractions"]
                print(f"{args.method} on {name}: blocks full {f['full']:.3f} / LUT {f['lut']:.3f} / skipped "
                      f"{f['skip']:.3f}, reused tokens {result['reused_tokens']:.3f}, cosine {result['cosine']:.4f}, "
                      f"rel_l1 {result['rel_l1']:.4f}, ideal {result['speedup_vs_dense_int8']:.2f}x dense INT8 "
                      f"(speculation {100 * result['speculation_overhead']:.2f}% of its cycles)")
    print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))


def _simpicker_params(args):
    return SimPickerParams.for_method(args.method, important_mass=args.important_mass,
                                      negligible_mass=args.negligible_mass, reuse_threshold=args.reuse_threshold,
                                      unimportant=args.unimportant)


def _simpicker_report(method, params, workload, holdout, plan, config):
    """SimPicker's decisions and quality on the calibration data (the plan's scales) and, if given, on the
    held-out data (its own scales: SimPicker decides per input)."""
    result = evaluate_simpicker(workload, config, params, method, plan)
    if holdout is not None:
        result["heldout"] = evaluate_simpicker(holdout, config, params, method, plan, scales_from_plan=False)
    return result


def _calibration_config(args, workload):
    return AcceleratorConfig(rows=args.rows, cols=args.cols, block_size=args.block_size,
                             head_dim=workload.head_dim, bitwidths=args.bitwidths, acc_width=args.acc_width,
                             max_seq_len=fitting_seq_len(workload.layout, args.block_size),
                             max_kept_keys=args.max_kept_keys, kv_cache_blocks=args.kv_cache_blocks,
                             max_heads=max(args.max_heads, workload.heads), pe_stages=args.pe_stages,
                             lut_lanes=args.lut_lanes, lut_mant_bits=args.lut_mant_bits,
                             spec_lanes=args.spec_lanes, lut_path=args.lut_path, k4_cut=args.k4_cut,
                             k2_cut=args.k2_cut)


def _calibrate_captures(args, layout):
    """``calibrate --captures DIR``: a plan set, one plan per (layer, timestep group)."""
    if args.holdout_sample is not None or args.holdout_qkv is not None:
        raise ParoError("--captures evaluates each group's plan on the group's other steps; drop --holdout-*")
    plan_set, report = calibrate_captures(args.captures, layout, lambda first: _calibration_config(args, first),
                                          density=args.density, avg_bits=args.avg_bits,
                                          groups=args.step_groups, heads=args.heads, allocation=args.allocation,
                                          error_metric=args.error_metric, jobs=args.jobs,
                                          log=lambda message: print(f"[paro] {message}", file=sys.stderr, flush=True))
    save_plan_set(plan_set, args.output)
    if args.report:
        atomic_write(args.report, json.dumps({**provenance(), **report}, indent=2) + "\n")
    for entry in report["entries"]:
        held = ", ".join(f"step {h['step']} {h['cosine']:.4f}" for h in entry["heldout"]) or "none"
        print(f"layer {entry['layer']}, steps {entry['steps'][0]}..{entry['steps'][-1]}: density "
              f"{entry['density']:.3f}, avg_bits {entry['avg_bits']:.2f}, cosine {entry['cosine']:.4f} on step "
              f"{entry['calibrated_on_step']}; other steps: {held}")
    print(f"wrote {args.output} ({len(plan_set.plans)} plans)" + (f" and {args.report}" if args.report else ""))


def _add_plan_selection(parser):
    parser.add_argument("--layer", type=int, default=None, help="plan sets: the layer whose plan to use")
    parser.add_argument("--step", type=int, default=None,
                        help="plan sets: a denoising step; the plan of its timestep group is used")


def cmd_plot(args):
    plan = load_plan(args.plan, args.layer, args.step)
    written = plot_plan(plan, args.output, heads=args.head)
    print(f"wrote {len(written)} PNGs to {args.output}")


def cmd_synth(args):
    config = _config(args)
    if args.top not in SYNTH_TOPS:
        raise ParoError(f"unknown --top {args.top!r}; choose one of {', '.join(SYNTH_TOPS)}")
    if args.top == "engine" and args.sweep:
        raise ParoError("--sweep places arrays of several sizes; drop --top engine (or --sweep)")
    if args.no_place and args.top != "engine":
        raise ParoError(NO_PLACE_ARRAY)
    if args.top == "engine":
        result = synth(config, target=args.target, report=args.report, build_dir=args.build_dir, top="engine",
                       place=not args.no_place)
        fpga = result[args.target]
        if args.no_place:
            cells = fpga["engine_cells"]
            print(f"{args.target}: the {config.rows}x{config.cols} engine synthesised by Yosys, not placed: "
                  f"{cells['luts']} LUTs ({cells['lut4']} LUT4s and {cells['carry']} carry cells), "
                  f"{cells['flip_flops']} FFs, {cells['dsps']} DSPs, {cells['brams']} BRAMs")
        else:
            print(f"{args.target} on {fpga['board']}: the {config.rows}x{config.cols} engine with its harness "
                  f"{fpga['luts']}/{fpga['luts_available']} LUTs, {fpga['flip_flops']} FFs, "
                  f"{fpga['dsps']}/{fpga['dsps_available']} DSPs, {fpga['brams']}/{fpga['brams_available']} BRAMs, "
                  f"Fmax {fpga['fmax_mhz']:.1f} MHz (target {fpga['target_mhz']:.1f} MHz); the engine alone "
                  f"{fpga['engine']['luts']} LUTs, {fpga['engine']['flip_flops']} FFs")
        print(f"{'block':<16}{'LUT4':>8}{'carry':>7}{'FFs':>8}{'BRAMs':>7}{'DSPs':>6}{'LUTRAM':>8}")
        for name, row in sorted(fpga["blocks"].items(), key=lambda item: -item[1]["lut4"]):
            print(f"{name:<16}{row['lut4']:>8}{row['carry']:>7}{row['flip_flops']:>8}{row['brams']:>7}"
                  f"{row['dsps']:>6}{row['lutram']:>8}")
        if fpga.get("critical_path"):
            print(f"critical path through: {' -> '.join(fpga['critical_path']['blocks'])}")
        if args.report:
            print(f"wrote {args.report}")
        return
    if args.sweep:
        if args.target not in TARGETS:
            raise ParoError(f"unknown target {args.target!r}; choose one of {', '.join(TARGETS)}")
        result = synth_sweep(config, args.target, sizes=parse_sizes(args.sweep_sizes),
                             stages=parse_stages(args.sweep_stages), report=args.report, build_dir=args.build_dir)
        for p in result["points"]:
            size = f"{p['rows']}x{p['cols']}, pe_stages {p['pe_stages']}"
            print(f"{size}: Fmax {p['fmax_mhz']:.1f} MHz (target met: {p['meets_target']}), array "
                  f"{p['array']['luts']} LUTs, {p['array']['flip_flops']} FFs, {p['array']['dsps']} DSPs"
                  if p["fits"] else f"{size}: does not fit")
        if args.report:
            print(f"wrote {args.report} and {Path(args.report).with_suffix('.png')}")
        return
    result = synth(config, target=args.target, report=args.report, build_dir=args.build_dir)
    generic = result["generic"]
    print(f"generic {config.rows}x{config.cols}: {generic['cells']} cells, {generic['flip_flops']} flip-flops, "
          f"{generic['multiplier_cells']} multiplier cells, ~{generic['cmos_transistors']} transistors, "
          f"{generic['nand2']['equivalents']} NAND2 equivalents; PE vs plain INT8 PE: "
          f"{result['pe_area_ratio']:.2f}x transistors, {result['pe_nand2_ratio']:.2f}x NAND2")
    if args.target != "generic":
        fpga = result[args.target]
        print(f"{args.target} on {fpga['board']}: {fpga['luts']}/{fpga['luts_available']} LUTs, "
              f"{fpga['flip_flops']} FFs, {fpga['dsps']}/{fpga['dsps_available']} DSPs, "
              f"{fpga['brams']}/{fpga['brams_available']} BRAMs, Fmax {fpga['fmax_mhz']:.1f} MHz "
              f"(target {fpga['target_mhz']:.1f} MHz); the array alone (minus the harness): "
              f"{fpga['array']['luts']} LUTs, {fpga['array']['flip_flops']} FFs")
    if args.report:
        print(f"wrote {args.report}")


def _print_simulation(result):
    for entry in result["per_head"]:
        c = entry["counters"]
        print(f"head {entry['head']} ({entry['order']}): bit_exact {entry['bit_exact']}, {entry['cycles']} cycles, "
              f"ideal {entry['ideal_cycles']} (utilization {entry['utilization']:.3f}), dense INT8 "
              f"{entry['dense_int8_cycles']} cycles ({entry['speedup_vs_dense_int8']:.2f}x); bytes read "
              f"{entry['bytes_read']} ({entry['bytes_read_vs_dense']:.2f}x dense); blocks 8-bit {c['blocks_8bit']}, "
              f"4-bit {c['blocks_4bit']}, skipped {c['blocks_skipped']}, stall cycles {c['stall_cycles']}; "
              f"cosine {entry['cosine']:.4f}, rel_l1 {entry['rel_l1']:.4f}")
        if result["method"] != "paro":
            print(f"  {result['method']}: speculation skipped {c['blocks_skipped_by_speculation']} blocks, worked "
                  f"{c['speculation_busy_cycles']} cycles, the engine waited {c['speculation_wait_cycles']}")
    first, last = result["query_blocks"]
    print(f"{len(result['heads'])} head(s) in one start, query blocks {first}..{last} on {result['simulator']} "
          f"({result['mode']} mode): bit_exact {result['bit_exact']}, {result['cycles']} cycles, utilization "
          f"{result['utilization']:.3f}, {result['speedup_vs_dense_int8']:.2f}x fewer cycles than dense INT8, "
          f"bytes read {result['bytes_read_vs_dense']:.2f}x dense")


def _heads(text):
    if text == "all":
        return "all"
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--heads must be 'all' or a comma-separated list like 0,3, got {text!r}")


def _rows(text):
    try:
        first, stop = (int(x) for x in text.split(":"))
    except ValueError:
        first = stop = None
    if first is None or not 0 <= first < stop:
        raise argparse.ArgumentTypeError(f"--rows must be FIRST:STOP query blocks with 0 <= FIRST < STOP "
                                         f"(like 10:14), got {text!r}")
    return range(first, stop)


def _int_list(text):
    if text == "all":
        return None
    try:
        return sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a comma-separated list like 0,5,10, got {text!r}")


def cmd_capture(args):
    if args.num_steps < 1:
        raise ParoError(f"--num-steps must be >= 1, got {args.num_steps}")
    if args.steps is not None and not set(args.steps) <= set(range(args.num_steps)):
        raise ParoError(f"--steps must be in [0, {args.num_steps - 1}] for --num-steps {args.num_steps}, "
                        f"got {','.join(map(str, args.steps))}")
    model = load_transformer(args.transformer, args.config, seed=args.seed)
    grid, files = capture_random_inputs(model, args.folder, args.frames, args.height, args.width, args.text_tokens,
                                        args.num_steps, steps=args.steps, layers=args.layers, seed=args.seed)
    print(f"wrote {len(files)} captures to {args.folder} (token grid {grid[0]}x{grid[1]}x{grid[2]}, "
          f"{args.text_tokens} text tokens)")
    print(f"next: paro calibrate --captures {args.folder} --grid {grid[0]},{grid[1]},{grid[2]} "
          f"--text-tokens {args.text_tokens} --density 0.25 -o plans.npz")


def cmd_simulate(args):
    if not 0 <= args.gap < 1:
        raise ParoError(f"--gap must be in [0, 1), got {args.gap}")
    if args.read_latency < 0:
        raise ParoError(f"--read-latency must be >= 0 cycles, got {args.read_latency}")
    heads = args.heads if args.heads is not None else [args.head]
    result = simulate(args.plan, simulator=args.simulator, heads=heads, rows=args.rows, report=args.report,
                      build_dir=args.build_dir, gap=args.gap, read_latency=args.read_latency, fast=args.fast,
                      plan_layer=args.layer, plan_step=args.step, method=args.method,
                      params=_simpicker_params(args))
    _print_simulation(result)
    if args.report:
        print(f"wrote {args.report}")


def cmd_model(args):
    if args.read_latency < 0:
        raise ParoError(f"--read-latency must be >= 0 cycles, got {args.read_latency}")
    result = model(args.plan, heads=args.heads, rows=args.rows, read_latency=args.read_latency,
                   bytes_per_cycle=args.bytes_per_cycle, engines=args.engines, report=args.report,
                   plan_layer=args.layer, plan_step=args.step, method=args.method, params=_simpicker_params(args))
    for entry in result["per_head"]:
        print(f"head {entry['head']} ({entry['order']}, engine {entry['engine']}): {entry['cycles']} cycles, ideal "
              f"{entry['ideal_cycles']} (utilization {entry['utilization']:.3f}), dense INT8 "
              f"{entry['dense_int8_cycles']} ({entry['speedup_vs_dense_int8']:.2f}x), K/V cache hit rate "
              f"{entry['kv_cache_hit_rate']:.3f}")
    first, last = result["query_blocks"]
    beyond = {k: v for k, v in result["breakdown"].items() if k != "compute" and v}
    worst = ", ".join(f"{k} {v / result['breakdown']['compute']:.1%}"
                      for k, v in sorted(beyond.items(), key=lambda kv: -kv[1])[:4])
    print(f"{len(result['heads'])} head(s), query blocks {first}..{last} on {result['engines']} engine(s): "
          f"{result['cycles']} cycles (model), utilization {result['utilization']:.3f}, "
          f"{result['speedup_vs_dense_int8']:.2f}x fewer cycles than dense INT8; beyond the ideal: {worst or 'none'}")
    if args.report:
        print(f"wrote {args.report}")


def cmd_project(args):
    result = project(args.model, plan_path=args.plan, density=args.density, kept_bits=args.kept_bits,
                     calibrate_heads=args.calibrate_heads, rows=args.rows, cols=args.cols,
                     frequency_ghz=args.frequency_ghz, peak_tops=args.peak_tops, bandwidth_tbs=args.bandwidth_tbs,
                     sharing=args.sharing, read_latency=args.read_latency, kv_cache_blocks=args.kv_cache_blocks,
                     attention_share=args.attention_share, report=args.report, layer=args.layer, step=args.step)
    gpu, e2e = result["gpu"], result["end_to_end"]
    print(f"{result['model']} attention layer ({result['heads']} heads x {result['tokens']} tokens, density "
          f"{result['density']:.3f}, {result['kept_bits']:.2f} bits per kept block) on {result['engines']} engines "
          f"{args.rows}x{args.cols} at {args.frequency_ghz} GHz ({result['dense_int8_peak_tops']:.0f} dense INT8 "
          f"TOPS), {args.bandwidth_tbs} TB/s shared ({args.sharing}):")
    print(f"  {result['layer_ms']:.3f} ms (ideal {result['ideal_ms']:.3f} ms, utilization {result['utilization']:.3f}, "
          f"{result['bound']}-bound: traffic {result['traffic_ms_at_full_bandwidth']:.3f} ms at full bandwidth)")
    print(f"  GPU ({gpu['device']}): dense SDPA {gpu['dense_ms']:.2f} ms ({result['speedup_vs_gpu_dense']:.2f}x), "
          f"flex_attention at this density {gpu['block_sparse_ms_at_density']:.2f} ms "
          f"({result['speedup_vs_gpu_block_sparse']:.2f}x)")
    print(f"  end to end (attention {e2e['attention_share_of_gpu_step']:.0%} of the GPU step): "
          f"{e2e['speedup_vs_gpu_dense']:.2f}x vs dense, {e2e['speedup_vs_gpu_block_sparse']:.2f}x vs block-sparse; "
          f"on-chip buffers {result['on_chip']['megabytes_total']:.0f} MB in all")
    if args.report:
        print(f"wrote {args.report} and {Path(args.report).with_suffix('.png')}")


def cmd_sweep(args):
    result = sweep(args.workload, heads=args.heads, arrays=args.arrays, block_sizes=args.block_sizes,
                   densities=args.densities, kept_bits=args.kept_bits, kv_cache_blocks=args.kv_cache_blocks,
                   frequency_ghz=args.frequency_ghz, read_latency=args.read_latency, scheduler=args.scheduler,
                   workers=args.workers, report=args.report)
    print(f"{len(result['points'])} points on Dask ({result['dask']['scheduler']}) in {result['seconds']} s; "
          f"{len(result['pareto_latency_area_error'])} on the Pareto front in latency, area and error")
    for density, front in result["pareto_at_density"].items():
        print(f"  Pareto front (latency, area) at density {density}: {', '.join(front)}")
    if args.report:
        print(f"wrote {args.report} and {Path(args.report).with_suffix('.png')}")


def cmd_formal(args):
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    result = formal(names, report=args.report, build_dir=args.build_dir)
    for check in result["checks"]:
        how = "k-induction" if check["method"] == "prove" else "bounded"
        print(f"{check['name']}: {check['status']} ({how}, depth {check['depth']}, {check['seconds']} s): "
              f"{check['what']}")
        for failure in check.get("failed", []):
            print(f"  failed: {failure['where']} at step {failure['step']}; trace {check.get('trace')}")
    if args.report:
        print(f"wrote {args.report}")
    if not result["passed"]:
        raise ParoError(f"{sum(c['status'] != 'PASS' for c in result['checks'])} formal check(s) did not pass; "
                        f"see the lines above and the traces")


def cmd_liveness(args):
    try:
        latencies = tuple(int(x) for x in args.latencies.split(","))
    except ValueError:
        raise ParoError(f"--latencies must be comma-separated integers, got {args.latencies!r}") from None
    if any(x < 0 for x in latencies):
        raise ParoError(f"--latencies must be >= 0, got {args.latencies!r}")
    result = every_bitmap(args.blocks, latencies, args.heads_per_start, report=args.report, build_dir=args.build_dir)
    print(f"liveness: all {result['bitmaps']:,} bitmaps of {result['n_blocks']} x {result['n_blocks']} blocks "
          f"reached done, bit-exact, in the modelled cycles at read latencies {list(latencies)} (largest head "
          f"{max(r['largest_head_cycles'] for r in result['runs']):,} cycles; {result['seconds']} s)")
    if args.report:
        print(f"wrote {args.report}")


def cmd_soak(args):
    result = soak(args.heads, seed=args.seed, fast_layers=args.fast_layers, gap=args.gap, report=args.report,
                  build_dir=args.build_dir)
    print(f"soak: {result['heads']} heads in {result['layers']} layers on {result['design_points']} design points, "
          f"{result['cycles']:,} engine cycles, {result['read_beats']:,} read and {result['write_beats']:,} write "
          f"beats checked against the golden model: {result['mismatches']} mismatches ({result['seconds']} s)")
    if args.report:
        print(f"wrote {args.report}")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def cmd_demo(args):
    """calibrate -> generate -> simulate -> report on the built-in tiny workload."""

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ParoError(f"demo output {str(out)!r} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    workload = make_workload("tiny")
    config = AcceleratorConfig(block_size=16, head_dim=workload.head_dim, max_seq_len=128)
    print("1/3 calibrate: tiny workload (2x4x8 video + 32 text tokens, 4 heads), density 0.5, 3 bits average")
    plan, report = calibrate(workload, config, density=0.5, avg_bits=3.0)
    save_plan(plan, out / "plan.npz")
    atomic_write(out / "calibration.json", json.dumps(report, indent=2) + "\n")
    print(f"    orders {' '.join(plan.orders)}; cosine {report['cosine']:.4f} vs fp64 dense attention")
    print("2/3 generate: engine Verilog")
    write_verilog(config, out / "engine.v", top="engine")
    print(f"3/3 simulate: head 1 on {args.simulator}, plus the dense INT8 baseline")
    result = simulate(out / "plan.npz", simulator=args.simulator, heads=[1], report=out / "simulation.json",
                      build_dir=args.build_dir)
    _print_simulation(result)
    print(f"wrote {out}/plan.npz, calibration.json, engine.v, simulation.json")


def _add_build_dir_arg(parser):
    parser.add_argument("--build-dir", default=None,
                        help="folder for simulator/synthesis work files (default: $PARO_BUILD_DIR or ./build)")


#: Output arguments that name one file (checked writable before any work starts); plot and demo take folders.
FILE_OUTPUTS = ("output", "report")


class _UsageError(Exception):
    """A malformed command line, raised by :class:`_Parser` instead of argparse's usage block and exit."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``paro: error: <what>`` (and where to look), exit status 2 from
    :func:`main`; sub-commands use the same class."""

    def error(self, message):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser():
    parser = _Parser(prog="paro", description="Accelerator generator for video-generation attention")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="emit Verilog (and a params JSON beside it)")
    _add_config_args(gen)
    gen.add_argument("--top", default="array", help=f"design to emit: {', '.join(TOPS)} (default array)")
    gen.add_argument("-o", "--output", required=True, help="output Verilog file")
    gen.set_defaults(func=cmd_generate)

    cal = sub.add_parser("calibrate", help="choose orders, block masks and bitwidths; write a BlockPlan")
    cal.add_argument("--workload", help="built-in workload: tiny, small or cogvideox")
    cal.add_argument("--qkv", help=".npz with q, k, v arrays (heads, tokens, head_dim)")
    cal.add_argument("--captures", help="folder of stepSSSS_layerLLL.npz Q/K/V captures: one plan per layer and "
                                        "timestep group (a plan set)")
    cal.add_argument("--step-groups", type=int, default=1, help="--captures: timestep groups (runs of steps)")
    cal.add_argument("--grid", type=_grid, help="token grid F,H,W of the --qkv file or the captures")
    cal.add_argument("--text-tokens", type=int, default=0, help="text tokens first in the --qkv file")
    cal.add_argument("--heads", type=int, default=None, help="calibrate only the first N heads")
    cal.add_argument("--seed", type=int, default=0, help="seed of the built-in workloads")
    cal.add_argument("--density", type=float, default=None, help="fraction of blocks kept per head")
    cal.add_argument("--avg-bits", type=float, default=None, help="average bits over all blocks (0-bit counts 0)")
    cal.add_argument("--rows", type=int, default=4, help="PE array rows of the engine the plan targets")
    cal.add_argument("--cols", type=int, default=4, help="PE array columns of the engine the plan targets")
    cal.add_argument("--block-size", type=int, default=64, help="attention block size B")
    cal.add_argument("--bitwidths", type=_bitwidths, default=(0, 4, 8), help="block bitwidth set, e.g. 0,4,8")
    cal.add_argument("--acc-width", type=int, default=None, help="accumulator width (default: minimum)")
    _add_kept_keys_arg(cal)
    cal.add_argument("--allocation", choices=METHODS, default="ilp",
                     help="bit allocation: ilp (exact, HiGHS) or lagrangian (fast, for very large layers)")
    cal.add_argument("--error-metric", choices=ERROR_METRICS, default="probability",
                     help="per-block error the allocation minimises: probability (L1 of P), output (L1 of the "
                          "attention output the block's error causes) or output-mse (its squared L2)")
    cal.add_argument("--jobs", type=int, default=None,
                     help="heads calibrated at once, in threads (default: the CPUs available; each holds about "
                          "300 MB at 17,776 tokens); the plan does not depend on it")
    cal.add_argument("--holdout-sample", type=int, default=None,
                     help="also evaluate the plan on this other sample (1..3) of the built-in workload")
    cal.add_argument("--holdout-qkv", default=None,
                     help="also evaluate the plan on this Q/K/V file (same grid and text tokens as --qkv)")
    _add_simpicker_args(cal)
    cal.add_argument("-o", "--output", required=True, help="BlockPlan file to write (.npz)")
    cal.add_argument("--report", help="JSON report to write")
    cal.set_defaults(func=cmd_calibrate)

    cap = sub.add_parser("capture", help="record a CogVideoX transformer's Q/K/V per step and layer (torch, "
                                         "diffusers: make install-capture)")
    cap.add_argument("--transformer", help="a saved CogVideoXTransformer3DModel folder (e.g. a checkpoint's "
                                           "transformer subfolder)")
    cap.add_argument("--config", help="a transformer config JSON: a randomly initialised model of that shape")
    cap.add_argument("--frames", type=int, required=True, help="latent frames of the random input")
    cap.add_argument("--height", type=int, required=True, help="latent height of the random input")
    cap.add_argument("--width", type=int, required=True, help="latent width of the random input")
    cap.add_argument("--text-tokens", type=int, required=True, help="text tokens of the random input")
    cap.add_argument("--num-steps", type=int, default=1, help="transformer calls (denoising steps) to run")
    cap.add_argument("--steps", type=_int_list, default=None, help="steps to capture: 'all' or a list like 0,5")
    cap.add_argument("--layers", type=_int_list, default=None, help="layers to capture: 'all' or a list like 0,3")
    cap.add_argument("--seed", type=int, default=0, help="seed of the random inputs (and a random model)")
    cap.add_argument("-o", dest="folder", required=True, help="capture folder to write")
    cap.set_defaults(func=cmd_capture)

    plot = sub.add_parser("plot", help="PNGs of a plan: attention maps before/after reordering, bitmaps")
    plot.add_argument("plan", help="BlockPlan file (.npz)")
    plot.add_argument("--head", type=int, action="append", help="head to plot (repeatable; default all)")
    _add_plan_selection(plot)
    plot.add_argument("-o", "--output", required=True, help="folder for the PNGs")
    plot.set_defaults(func=cmd_plot)

    syn = sub.add_parser("synth", help="synthesise the array (generic Yosys stats or an FPGA flow) or the engine")
    _add_config_args(syn)
    syn.add_argument("--target", default="generic", help="generic (default), ecp5 or ice40")
    syn.add_argument("--top", default="array",
                     help="array (default: the PE array, generic stats and PE area, or FPGA) or engine (the whole "
                          "attention engine on an FPGA target, per-block table)")
    syn.add_argument("--report", help="JSON report to write")
    syn.add_argument("--no-place", action="store_true",
                     help="--top engine: stop after Yosys: the per-block table and the engine's cells, no "
                          "placement, routing or Fmax (minutes instead of hours for larger engines)")
    syn.add_argument("--sweep", action="store_true",
                     help="place and route every --sweep-sizes x --sweep-stages point: Fmax and resources (+ PNG)")
    syn.add_argument("--sweep-sizes", default=",".join(f"{r}x{c}" for r, c in SWEEP_SIZES),
                     help="--sweep: array sizes, e.g. 2x2,4x4,8x8 (default)")
    syn.add_argument("--sweep-stages", default=",".join(str(s) for s in SWEEP_STAGES),
                     help="--sweep: PE pipeline depths, e.g. 0,1,2 (default)")
    _add_build_dir_arg(syn)
    syn.set_defaults(func=cmd_synth)

    sim = sub.add_parser("simulate", help="run a plan head on the engine RTL, check bit-exactness, count cycles")
    sim.add_argument("--plan", required=True, help="BlockPlan file (.npz) from paro calibrate")
    _add_plan_selection(sim)
    sim.add_argument("--simulator", default="verilator", help="verilator (default) or icarus")
    _add_simpicker_args(sim)
    sim.add_argument("--head", type=int, default=0, help="head of the plan to run (default 0)")
    sim.add_argument("--heads", type=_heads, default=None, help="heads to run: 'all' or a list like 0,3 (a layer)")
    sim.add_argument("--rows", type=_rows, default=None,
                     help="query blocks to compute, FIRST:STOP (like 10:14; default all)")
    sim.add_argument("--report", help="JSON report to write")
    sim.add_argument("--gap", type=float, default=0.0,
                     help="memory model: probability that a bus channel pauses in a cycle (default 0: one beat "
                          "per cycle)")
    sim.add_argument("--read-latency", type=int, default=0,
                     help="memory model: cycles before each read burst's first beat (default 0)")
    sim.add_argument("--fast", action="store_true",
                     help="fast run mode: the engine in a C++ Verilator harness (no bus pauses), for long heads")
    _add_build_dir_arg(sim)
    sim.set_defaults(func=cmd_simulate)

    mod = sub.add_parser("model", help="cycles of a plan's heads from the cycle model (seconds, no RTL)")
    mod.add_argument("--plan", required=True, help="BlockPlan file (.npz) from paro calibrate")
    _add_plan_selection(mod)
    mod.add_argument("--heads", type=_heads, default="all", help="heads: 'all' (default) or a list like 0,3")
    mod.add_argument("--rows", type=_rows, default=None,
                     help="query blocks to compute, FIRST:STOP (like 10:14; default all)")
    mod.add_argument("--read-latency", type=int, default=0,
                     help="memory: cycles before each read burst's first beat (default 0)")
    mod.add_argument("--bytes-per-cycle", type=_positive_float, default=None,
                     help="memory: read bandwidth in bytes per engine clock, shared by all engines (default: "
                          "each engine's AXI data width a cycle)")
    mod.add_argument("--engines", type=_positive_int, default=1,
                     help="engines sharing the memory; heads go to them round robin (default 1)")
    mod.add_argument("--report", help="JSON report to write")
    _add_simpicker_args(mod)
    mod.set_defaults(func=cmd_model)

    proj = sub.add_parser("project", help="a CogVideoX attention layer on paro engines (cycle model) next to an H100")
    proj.add_argument("--model", default="cogvideox-5b", help=f"one of {', '.join(MODELS)} (default cogvideox-5b)")
    proj.add_argument("--plan", help="a plan for the model's 17,776 tokens (default: calibrate the cogvideox workload)")
    _add_plan_selection(proj)
    proj.add_argument("--density", type=float, default=0.25, help="calibration: kept-block density (default 0.25)")
    proj.add_argument("--kept-bits", type=float, default=6.0,
                      help="calibration: average bits per kept block, 4 to 8 (default 6: half 4-bit, half 8-bit)")
    proj.add_argument("--calibrate-heads", type=int, default=2,
                      help="calibration: heads calibrated; the layer's heads reuse them in turn (default 2)")
    proj.add_argument("--rows", type=int, default=16, help="PE array rows per engine (default 16)")
    proj.add_argument("--cols", type=int, default=16, help="PE array columns per engine (default 16)")
    proj.add_argument("--frequency-ghz", type=float, default=2.0, help="engine clock (default 2.0)")
    proj.add_argument("--peak-tops", type=float, default=430.0,
                      help="dense INT8 peak of all engines, sets the engine count (default 430: the H100's measured "
                           "dense attention throughput on this layer)")
    proj.add_argument("--bandwidth-tbs", type=float, default=3.35, help="memory bandwidth (default 3.35: an H100's)")
    proj.add_argument("--sharing", default="demand",
                      help=f"how engines share it: {' or '.join(SHARING)} (default demand; equal: a static split)")
    proj.add_argument("--read-latency", type=int, default=0, help="memory: cycles before a burst's first beat")
    proj.add_argument("--kv-cache-blocks", type=int, default=128, help="K/V cache slots per engine (default 128)")
    proj.add_argument("--attention-share", type=float, default=0.75,
                      help="attention's share of a GPU denoising step, for the end-to-end estimate (default 0.75)")
    proj.add_argument("--report", help="JSON report to write (a PNG is written beside it)")
    proj.set_defaults(func=cmd_project)

    swp = sub.add_parser("sweep", help="design-space sweep through Dask: latency, utilization, area, Pareto PNG")
    swp.add_argument("--workload", default="small", help=f"built-in workload: {', '.join(WORKLOADS)} (default small)")
    swp.add_argument("--heads", type=_positive_int, default=None, help="heads of the workload (default all)")
    swp.add_argument("--arrays", default="4x4,8x8,8x16,16x16", help="PE arrays RxC (default 4x4,8x8,8x16,16x16)")
    swp.add_argument("--block-sizes", default="32,64", help="block sizes (default 32,64)")
    swp.add_argument("--densities", default="0.15,0.25,0.35", help="kept-block densities (default 0.15,0.25,0.35)")
    swp.add_argument("--kept-bits", default="5,7", help="average bits per kept block, 4 to 8 (default 5,7)")
    swp.add_argument("--kv-cache-blocks", type=_positive_int, default=16, help="K/V cache slots (default 16)")
    swp.add_argument("--frequency-ghz", type=_positive_float, default=1.0, help="clock for latencies (default 1)")
    swp.add_argument("--read-latency", type=int, default=0, help="memory: cycles before a burst's first beat")
    swp.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    swp.add_argument("--workers", type=_positive_int, default=None, help="local cluster workers (default: CPUs)")
    swp.add_argument("--report", help="JSON report to write (the Pareto PNG is written beside it)")
    swp.set_defaults(func=cmd_sweep)

    frm = sub.add_parser("formal", help="prove the blocks' properties with SymbiYosys (yowasp) and Boolector")
    frm.add_argument("--only", help=f"checks to run, comma-separated (default all: {', '.join(CHECKS)})")
    frm.add_argument("--report", help="JSON report to write")
    _add_build_dir_arg(frm)
    frm.set_defaults(func=cmd_formal)

    sk = sub.add_parser("soak", help="long random co-simulation of the engine against the golden model")
    sk.add_argument("--heads", type=_positive_int, default=200, help="heads to check at least (default 200)")
    sk.add_argument("--seed", type=int, default=20261128, help="seed of the design points and layers")
    sk.add_argument("--fast-layers", type=_positive_int, default=5, help="fast-mode layers per design point")
    sk.add_argument("--gap", type=float, default=0.2, help="bus pause probability of the cocotb layer (default 0.2)")
    sk.add_argument("--report", help="JSON report to write")
    _add_build_dir_arg(sk)
    sk.set_defaults(func=cmd_soak)

    lv = sub.add_parser("liveness", help="every bitmap of a small engine runs to done, bit-exact, in the modelled "
                                         "cycles")
    lv.add_argument("--blocks", type=_positive_int, default=3, help="query and key blocks a head (default 3)")
    lv.add_argument("--latencies", default="0,20", help="memory read latencies, comma-separated (default 0,20)")
    lv.add_argument("--heads-per-start", type=_positive_int, default=64, help="heads per engine start (default 64)")
    lv.add_argument("--report", help="JSON report to write")
    _add_build_dir_arg(lv)
    lv.set_defaults(func=cmd_liveness)

    demo = sub.add_parser("demo", help="calibrate -> generate -> simulate -> report on the tiny workload")
    demo.add_argument("-o", "--output", default="build/demo", help="output folder (default build/demo)")
    demo.add_argument("--simulator", default="verilator", help="verilator (default) or icarus")
    _add_build_dir_arg(demo)
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="run a benchmark and write JSON + PNG")
    bench.add_argument("which", help="benchmark: array, calibration-speed (a CogVideoX-5B layer's calibration: "
                                     "wall clock, peak memory), engine-speed (needs --plan), model-validation, "
                                     "precision (2-bit blocks on small), simpicker (the SimPicker ablation on small, "
                                     "ideal cycles) or simpicker-rtl (its rows the engine RTL runs, RTL cycles)")
    bench.add_argument("--points", type=int, default=24, help="model-validation: random design points (default 24)")
    bench.add_argument("--seed", type=int, default=20261128, help="model-validation: seed of the design points")
    bench.add_argument("--plan", help="engine-speed: the plan whose head is simulated")
    bench.add_argument("--head", type=int, default=1, help="engine-speed: the head (default 1)")
    bench.add_argument("-o", "--output", required=True, help="output JSON file (a PNG is written beside it)")
    bench.add_argument("--simulator", default="verilator", help="icarus or verilator (default)")
    _add_build_dir_arg(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        print(f"paro: error: {error}", file=sys.stderr)
        return 2
    try:
        if args.command not in ("plot", "demo"):
            for name in FILE_OUTPUTS:
                if getattr(args, name, None):
                    check_writable(getattr(args, name))
        args.func(args)
    except ParoError as error:
        print(f"paro: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
