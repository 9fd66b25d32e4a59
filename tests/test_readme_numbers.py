"""Every number in the README's "Measured" table comes from a committed results file under results/, which
names its configuration, commit and command; this test recomputes each table cell from those files."""

import json
from pathlib import Path

import pytest

from paro.flows.precision import cut_label

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"


def _load(name):
    path = RESULTS / name
    assert path.is_file(), f"results/{name} is not committed; run the command the README names"
    result = json.loads(path.read_text())
    assert result.get("commit") and result.get("command", "").startswith("paro "), f"{name} names no commit/command"
    assert "config" in result, f"{name} names no configuration"
    return result


def _array(r):
    ratios = [v for entry in r["summary"].values() for k, v in entry.items() if k.endswith("products_per_cycle")]
    steady = [entry["int8_steady_utilization"] for entry in r["summary"].values()]
    sizes = list(r["summary"])
    return (f"{min(ratios):.2f}-{max(ratios):.2f}x; INT8 steady-state utilization {min(steady):.3f} "
            f"({', '.join(sizes)})")


def _calibration(r):
    return f"cosine {r['cosine']:.4f} vs fp64 (same blocks at full precision {r['cosine_fp_mask']:.4f})"


def _reorder(r):
    cuts = sorted(r["reorder_pays"]["rel_l1_reduction"].values(), reverse=True)
    return f"rel_l1 {' and '.join(f'{100 * c:.0f}%' for c in cuts)} lower than the identity order"


def _engine(r):
    assert r["bit_exact"] is True
    return (f"bit-exact; {r['cycles']:,} cycles, utilization {r['utilization']:.3f}; "
            f"{r['speedup_vs_dense_int8']:.2f}x fewer cycles than dense INT8 ({r['dense_int8_cycles']:,}); "
            f"bytes read {r['bytes_read']:,} ({r['bytes_read_vs_dense']:.2f}x dense)")


def _speed(r):
    fast, cocotb = r["modes"]["fast"], r["modes"]["cocotb"]
    return (f"fast mode {fast['cycles_per_second']:,.0f} cycles/s (median of {len(fast['runs_cycles_per_second'])} "
            f"runs; target {r['target']['fast_cycles_per_second']:,} met: {r['meets_target']}), "
            f"{r['fast_vs_cocotb']:.0f}x the cocotb bench ({cocotb['cycles_per_second']:,.0f} cycles/s)")


def _ecp5(r):
    f, a = r["ecp5"], r["ecp5"]["array"]
    assert r["config"]["pe_stages"] == 2
    return (f"array alone {a['luts']:,} LUTs, {a['flip_flops']:,} FFs, {a['dsps']} DSPs, {a['brams']} BRAM (with the "
            f"harness {f['luts']:,} LUTs, {f['flip_flops']:,} FFs); Fmax {f['fmax_mhz']:.1f} MHz, target "
            f"{f['target_mhz']:.0f} MHz met: {f['meets_target']}")


def _ecp5_engine(r):
    f, e = r["ecp5"], r["ecp5"]["engine"]
    assert r["top"] == "engine" and r["config"]["pe_stages"] == 2 and f["blocks"]
    assert sum(block["brams"] for block in f["blocks"].values()) == f["brams"]      # every BRAM is a buffer's
    return (f"engine alone {e['luts']:,} LUTs, {e['flip_flops']:,} FFs, {e['dsps']} DSPs, {e['brams']} BRAMs (with the "
            f"harness {f['luts']:,} of {f['luts_available']:,} LUTs, {f['brams']} of {f['brams_available']} BRAMs); "
            f"Fmax {f['fmax_mhz']:.1f} MHz, target {f['target_mhz']:.0f} MHz met: {f['meets_target']}")


def _ecp5_engine_cells(r):
    f = r["ecp5"]
    c = f["engine_cells"]
    assert r["top"] == "engine" and f["placed"] is False and r["config"]["pe_stages"] == 2
    largest = sorted(f["blocks"].items(), key=lambda item: -(item[1]["lut4"] + 2 * item[1]["carry"]))[:4]
    return (f"engine {c['luts']:,} LUTs ({c['lut4']:,} LUT4s, {c['carry']:,} carry cells), {c['flip_flops']:,} FFs, "
            f"{c['dsps']} DSPs, {c['brams']} BRAMs; largest blocks "
            + ", ".join(f"{name.replace('_', ' ')} {row['lut4'] + 2 * row['carry']:,}" for name, row in largest))


def _pe_area(r):
    assert r["config"]["pe_stages"] == 0                  # the single-cycle PEs: the plainest comparison
    pe = r["pe"]["mixed"]
    return (f"{pe['cells']:,} cells, {pe['flip_flops']} flip-flops, {pe['cmos_transistors']:,} transistors, "
            f"{pe['nand2']['equivalents']:,} NAND2 equivalents; {r['pe_area_ratio']:.2f}x transistors, "
            f"{r['pe_nand2_ratio']:.2f}x NAND2 of the plain INT8 PE")


def _heldout(r):
    return f"{_calibration(r['heldout'])}, rel_l1 {r['heldout']['rel_l1']:.4f}"


def _model(r):
    s = r["summary"]
    configs = [record["config"] for record in r["records"]]
    cuts = {bits: sum(c.get(f"k{bits}_cut") == "leading-zero" for c in configs) for bits in (4, 2)}
    return (f"{r['points']} random design points, each bit-exact: max cycle error {100 * s['max_abs_error']:.3f}%, "
            f"mean {100 * s['mean_abs_error']:.3f}% ({s['exact_points']} of {r['points']} exact, bytes read equal: "
            f"{s['bytes_read_equal']})"
            + (f"; {cuts[4]} points cut 4-bit K at the leading zero, {cuts[2]} 2-bit K"
               if "k2_cut" in configs[0] else ""))


def _projection(r):
    c = r["config"]
    return (f"{r['layer_ms']:.2f} ms (ideal {r['ideal_ms']:.2f} ms, utilization {r['utilization']:.3f}, "
            f"{r['bound']}-bound), {r['engines']} engines {c['rows']}x{c['cols']} at {r['frequency_ghz']:g} GHz: "
            f"{r['speedup_vs_gpu_block_sparse']:.2f}x the H100's flex_attention at density {r['density']:.3f} "
            f"({r['gpu']['block_sparse_ms_at_density']:.2f} ms), {r['speedup_vs_gpu_dense']:.2f}x dense SDPA; "
            f"end to end {r['end_to_end']['speedup_vs_gpu_block_sparse']:.2f}x / "
            f"{r['end_to_end']['speedup_vs_gpu_dense']:.2f}x; on-chip buffers {r['on_chip']['megabytes_total']:,.0f} MB")


def _sweep(r):
    best = r["pareto_at_density"]["0.25"]
    return (f"{len(r['points'])} points on Dask ({r['dask']['scheduler']}, {r['dask']['workers']} workers); "
            f"Pareto front at density 0.25: {', '.join(best)}")


def _formal(r):
    assert r["passed"] is True
    return "; ".join(f"{c['name']}: {c['status']} ({'k-induction' if c['method'] == 'prove' else 'bounded'}, "
                     f"depth {c['depth']})" for c in r["checks"])


def _liveness(r):
    assert r["passed"] is True and r["failures"] == 0
    return (f"all {r['bitmaps']:,} legal bitmaps reached done, bit-exact, each head in exactly the cycle model's "
            f"cycles (largest {max(run['largest_head_cycles'] for run in r['runs']):,}); read latency "
            f"{', '.join(str(run['read_latency']) for run in r['runs'])}")


def _soak(r):
    assert r["mismatches"] == 0
    return (f"{r['heads']} heads in {r['layers']} starts on {r['design_points']} random design points: "
            f"{r['cycles']:,} engine cycles, {r['read_beats']:,} read and {r['write_beats']:,} write beats, "
            f"0 mismatches")


def _soak_points(r):
    points = [p["config"] for p in r["points"]]
    two_bit = sum(2 in p["bitwidths"] for p in points)
    pipelined = sum(p["pe_stages"] > 0 for p in points)
    cuts = sum(p.get("k4_cut") == "leading-zero" or p.get("k2_cut") == "leading-zero" for p in points)
    return _soak(r) + (f" ({two_bit} of the {len(points)} points with 2-bit blocks, {pipelined} with pipelined PEs"
                       + (f", {cuts} with leading-zero K cuts)" if "k2_cut" in points[0] else ")"))


def _bits(row):
    return "{" + ", ".join(str(b) for b in row["bitwidths"]) + "}"


def _precision_cycles(r):
    c = r["cycles"]
    plans = c["plans"]
    assert all(row["bit_exact"] for row in plans)
    groups = {}
    for row in plans:
        groups.setdefault("leading-zero K cuts" if row["k4_cut"] == "leading-zero" else "default K cuts",
                          []).append(row)

    def group(name, rows):
        base, two = rows[0], rows[-1]
        return (f"{name}: {_bits(two)} at {two['avg_bits']} average bits {two['cycles']:,} cycles (cosine "
                f"{two['cosine']:.4f}) vs {_bits(base)} at its minimum {base['avg_bits']}: {base['cycles']:,} "
                f"(cosine {base['cosine']:.4f}), {two['cycles'] / base['cycles']:.2f}x; "
                + "; ".join(f"{_bits(row)} at {row['avg_bits']}: {row['cycles']:,} (cosine {row['cosine']:.4f})"
                            for row in rows[1:-1]))
    return "bit-exact; " + "; ".join(group(name, rows) for name, rows in groups.items()) \
        + f"; dense INT8 {c['dense_int8_cycles']:,}"


def _precision_quality(r):
    plans = r["quality"]["plans"]
    dense = plans[-1]
    return "; ".join(f"{_bits(row)}{' ' + cut_label(row) if cut_label(row) else ''} "
                     f"{row['error_metric']} metric: rel_l1 {row['rel_l1']:.5f} "
                     f"({row['rel_l1_vs_dense']:.2f}x), held-out {row['heldout_rel_l1']:.5f}" for row in plans[:-1]) \
        + f"; all 8-bit: {dense['rel_l1']:.5f}, held-out {dense['heldout_rel_l1']:.5f}"


def _synth_sweep(r):
    points = r["points"]
    assert all(p["fits"] for p in points)
    sizes = sorted({(p["rows"], p["cols"]) for p in points}, key=lambda s: s[0] * s[1])
    stages = sorted({p["pe_stages"] for p in points})
    fmax = {(p["rows"], p["cols"], p["pe_stages"]): p["fmax_mhz"] for p in points}
    return (f"Fmax (MHz) at {' / '.join(str(s) for s in stages)} PE stages: "
            + "; ".join(f"{rows}x{cols} " + " / ".join(f"{fmax[rows, cols, s]:.1f}" for s in stages)
                        for rows, cols in sizes))


def _lut_area(r):
    lut = r["lut_multiplier"]
    a, b = lut["lut"], lut["plain"]
    return (f"{a['nand2']['equivalents']:,} NAND2 equivalents, {a['flip_flops']} flip-flops vs "
            f"{b['nand2']['equivalents']:,} and {b['flip_flops']}: {lut['nand2_ratio']:.2f}x NAND2, "
            f"{lut['area_ratio']:.2f}x transistors ({lut['lanes']} lanes, {lut['mant_bits']}-bit mantissa)")


def _simpicker(r):
    assert "NOT RTL" in r["units"]["ideal_cycles"]
    return "; ".join(f"{row['name']} {row['speedup_vs_dense_int8']:.2f}x (cosine {row['cosine']:.4f}, held-out "
                     f"{row['heldout_cosine']:.4f})" for row in r["rows"]) \
        + f"; grouping {r['grouping_gain']:.2f}x; reused tokens {r['rows'][-1]['reused_tokens']:.3f}"


def _simpicker_rtl(r):
    assert "RTL" in r["units"]["cycles"] and r["not_in_rtl"]
    rows = r["rows"]
    return "; ".join([f"{rows[0]['name']} {rows[0]['cycles']:,} cycles"]
                     + [f"{row['name']} {row['cycles']:,} ({row['speedup_vs_dense_int8']:.2f}x, cosine "
                        f"{row['cosine']:.4f})" for row in rows[1:]])


def _calibration_speed(r):
    target = r["target"]
    return (f"{r['wall_seconds']:.0f} s wall, peak RSS {r['peak_rss_mb']:,.0f} MB ({r['jobs']} threads on "
            f"{r['cpus']} CPUs; target {target['seconds']:.0f} s and {target['peak_rss_mb']:,.0f} MB met: "
            f"{r['meets_target']}); cosine {r['quality']['cosine']:.4f}, rel_l1 {r['quality']['rel_l1']:.4f}")


CELLS = [("array_throughput.json", _array), ("calibration_speed_cogvideox.json", _calibration_speed),
         ("small_calibration.json", _calibration),
         ("small_calibration.json", _heldout), ("small_calibration.json", _reorder),
         ("engine_small_head1.json", _engine), ("engine_small_layer.json", _engine),
         ("engine_small_head1_latency40.json", _engine), ("engine_speed_small.json", _speed),
         ("engine_cogvideox_head1_rows100-103.json", _engine),
         ("synth_ecp5_4x4.json", _ecp5), ("synth_ecp5_8x8.json", _ecp5), ("synth_generic_4x4.json", _pe_area),
         ("synth_generic_4x4_0248.json", _pe_area), ("synth_generic_4x4_lz.json", _pe_area),
         ("synth_generic_4x4_0248_lz.json", _pe_area), ("synth_sweep_ecp5.json", _synth_sweep),
         ("model_validation.json", _model), ("projection_cogvideox-5b.json", _projection),
         ("projection_cogvideox-5b_equal.json", _projection), ("sweep_small.json", _sweep),
         ("formal.json", _formal), ("liveness.json", _liveness), ("soak.json", _soak_points),
         ("precision_small.json", _precision_cycles), ("precision_small.json", _precision_quality),
         ("simpicker_small.json", _simpicker), ("simpicker_rtl_small.json", _simpicker_rtl),
         ("synth_generic_4x4.json", _lut_area),
         ("soak_short.json", _soak_points), ("synth_ecp5_engine_tiny.json", _ecp5_engine),
         ("synth_ecp5_engine_small_cells.json", _ecp5_engine_cells)]


@pytest.mark.parametrize("name,cell", CELLS, ids=[c.__name__.strip("_") for _, c in CELLS])
def test_readme_table_agrees_with_results(name, cell):
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Measured"):]
    table = table[:table.index("\n## ", 1)]
    expected = cell(_load(name))
    assert f"| {expected} |" in table, f"README's Measured table should say: {expected}"
