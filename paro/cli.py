"""The ``paro`` command: generate, bench (and, as they land, calibrate, simulate, synth, demo).

User mistakes end with one line, ``paro: error: <what is wrong and how to fix it>``, exit status 2, and no
partial output file.
"""

import argparse
import sys

from .config import AcceleratorConfig
from .errors import ParoError

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


def _config(args):
    return AcceleratorConfig(rows=args.rows, cols=args.cols, block_size=args.block_size, head_dim=args.head_dim,
                             bitwidths=args.bitwidths, acc_width=args.acc_width)


def cmd_generate(args):
    from .generate import TOPS, write_verilog
    if args.top not in TOPS:
        raise ParoError(f"unknown top {args.top!r}; choose one of {', '.join(TOPS)}")
    config = _config(args)
    path, params_path = write_verilog(config, args.output, top=args.top)
    print(f"wrote {path} ({args.top}, {config.rows}x{config.cols}, acc_width {config.acc_width}) and {params_path}")


def cmd_bench(args):
    from .bench import bench_array
    if args.which != "array":
        raise ParoError(f"unknown bench {args.which!r}; choose one of: array")
    result, plot = bench_array(args.output, simulator=args.simulator)
    for size, entry in result["summary"].items():
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in entry.items() if k.endswith("products_per_cycle"))
        print(f"{size}: INT8 steady utilization {entry['int8_steady_utilization']:.3f}, "
              f"fill/drain {entry['int8_fill_drain_cycles']} cycles, {ratios}")
    print(f"wrote {args.output} and {plot}")


def build_parser():
    parser = argparse.ArgumentParser(prog="paro", description="Accelerator generator for video-generation attention")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="emit Verilog (and a params JSON beside it)")
    _add_config_args(gen)
    gen.add_argument("--top", default="array", help="design to emit: array (default) or pe")
    gen.add_argument("-o", "--output", required=True, help="output Verilog file")
    gen.set_defaults(func=cmd_generate)

    bench = sub.add_parser("bench", help="run a benchmark and write JSON + PNG")
    bench.add_argument("which", help="benchmark: array")
    bench.add_argument("-o", "--output", required=True, help="output JSON file (a PNG is written beside it)")
    bench.add_argument("--simulator", default="verilator", help="icarus or verilator (default)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ParoError as error:
        print(f"paro: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
