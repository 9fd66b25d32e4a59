"""Synthesis flows: generic Yosys statistics, the ECP5 flow with its constraint file, and clear errors."""

import json
import re

import pytest
from amaranth.back import rtlil

from paro.flows.cli import main
from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.flows.synth import FLIP_FLOP_NAND2, _critical_path, _nand2, _tool_path, _transistors, block_table, synth
from paro.flows.synth_sweep import synth_sweep
from paro.hw.engine import AttentionEngine
from paro.hw.synth_harness import HARNESS_TOPS, SynthHarness, harness_flip_flops, harness_input_bits


@pytest.fixture(scope="module")
def ecp5_2x2(tmp_path_factory):
    work = tmp_path_factory.mktemp("synth")
    report = work / "synth.json"
    result = synth(AcceleratorConfig(rows=2, cols=2), target="ecp5", report=report, work_dir=work / "run",
                   log=lambda m: None)
    return result, report, work


def test_generic_counts(ecp5_2x2):
    result, _, _ = ecp5_2x2
    generic = result["generic"]
    assert generic["cells"] > 1000 and generic["flip_flops"] > 100
    assert generic["multiplier_cells"] == 2 * 2 * 2          # two sub-multipliers per PE
    assert 1.0 < result["pe_area_ratio"] < 2.0                # the 4-bit modes cost some area, not a second PE
    assert 1.0 < result["pe_nand2_ratio"] < 2.0
    plain = result["pe"]["int8_only"]
    assert plain["multiplier_cells"] == 1 and plain["flip_flops"] == 8 + 8 + 5 + 2 * plain_width(result) + 1
    nand2 = generic["nand2"]
    assert nand2["flip_flops"] == generic["flip_flops"]
    assert nand2["equivalents"] == nand2["nand2"] + nand2["inverters"] + FLIP_FLOP_NAND2 * nand2["flip_flops"]
    lut = result["lut_multiplier"]                              # SimPicker's unit: tables, not multipliers
    assert lut["lut"]["multiplier_cells"] == 0 and lut["plain"]["multiplier_cells"] == lut["lanes"] == 16
    assert lut["nand2_ratio"] == lut["lut"]["nand2"]["equivalents"] / lut["plain"]["nand2"]["equivalents"]
    small, large = result["array_scaling"]
    assert (small["rows"], large["rows"]) == (2, 4)
    assert 3.0 < large["cmos_transistors"] / small["cmos_transistors"] < 5.0   # ~ R x C


def test_ecp5_report_and_constraints(ecp5_2x2):
    result, report, work = ecp5_2x2
    fpga = result["ecp5"]
    assert fpga["luts"] > 100 and fpga["flip_flops"] > 100
    assert fpga["dsps"] > 0 and fpga["brams"] == 0
    assert fpga["fmax_mhz"] > 0
    assert fpga["target_mhz"] == fpga["constraint_file_target_mhz"] == 100.0   # the LPF file is what applied
    assert "FREQUENCY PORT \"clk25_0__io\" 100 MHZ;" in (work / "run" / "ecp5" / "paro.lpf").read_text()
    assert json.loads(report.read_text())["ecp5"]["luts"] == fpga["luts"]
    harness, array = fpga["harness"], fpga["array"]
    assert array["luts"] + harness["luts"] == fpga["luts"] and 0 < harness["luts"] < fpga["luts"] / 10
    assert harness["flip_flops"] == harness_flip_flops(AcceleratorConfig(rows=2, cols=2))
    assert array["flip_flops"] == fpga["flip_flops"] - harness["flip_flops"] and array["dsps"] == fpga["dsps"]


def plain_width(result):
    """The accumulator width of the report's configuration."""
    return result["config"]["acc_width"]


def test_every_cell_is_modelled_or_the_flow_says_so():
    with pytest.raises(ParoError, match=r"yosys has no CMOS transistor model for some cells of the pe \(\$_DFFE_PP_, "):
        _transistors({"estimated_num_transistors": "96+", "num_cells_by_type": {"$_DFFE_PP_": 1, "$_NAND_": 2}}, "pe")
    assert _transistors({"estimated_num_transistors": 96, "num_cells_by_type": {"$_NAND_": 2}}, "pe") == 96
    with pytest.raises(ParoError, match=r"the NAND mapping of the array left cells \$_XOR_; no NAND2 count"):
        _nand2({"num_cells_by_type": {"$_NAND_": 5, "$_XOR_": 1}}, "array")


def test_design_that_does_not_fit(tmp_path, capsys):
    report = tmp_path / "synth.json"
    assert main(["synth", "--rows", "4", "--cols", "4", "--target", "ice40", "--report", str(report)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert len(err) == 1 and "the 4x4 array does not fit iCEBreaker (iCE40UP5K)" in err[0]
    assert not report.exists()


def test_unknown_target_and_missing_tool(tmp_path, capsys):
    assert main(["synth", "--target", "virtex", "--report", str(tmp_path / "r.json")]) == 2
    assert "unknown target 'virtex'; choose one of generic, ecp5, ice40" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(ParoError, match="yowasp-nextpnr-xyz is not installed: pip install yowasp-nextpnr-xyz"):
        _tool_path("yowasp-nextpnr-xyz", "yowasp-nextpnr-xyz")


def test_sweep_over_pipeline_depths(tmp_path):
    """A 2x2 array at 0 and 2 PE stages on ECP5: both placed and routed, the pipelined one faster, every point's
    array resources with the harness subtracted; JSON and PNG written."""
    report = tmp_path / "sweep.json"
    result = synth_sweep(AcceleratorConfig(rows=2, cols=2), "ecp5", sizes=((2, 2),), stages=(0, 2), report=report,
                         build_dir=tmp_path, log=lambda m: None)
    single, pipelined = result["points"]
    assert (single["pe_stages"], pipelined["pe_stages"]) == (0, 2) and single["fits"] and pipelined["fits"]
    assert pipelined["fmax_mhz"] > single["fmax_mhz"] and pipelined["array"]["dsps"] == single["array"]["dsps"] > 0
    assert pipelined["array"]["flip_flops"] > single["array"]["flip_flops"]          # the stage registers
    assert json.loads(report.read_text())["points"] == result["points"] and report.with_suffix(".png").is_file()


@pytest.mark.parametrize("argv,message", [
    (["--sweep-sizes", "2by2"], "--sweep-sizes takes sizes like 2x2,4x4,8x8; got '2by2'"),
    (["--sweep-stages", "0,3"], "--sweep-stages: pe_stages must be in [0, 2], got 3"),
    (["--sweep-sizes", "3x3"], "rows must be a power of two in [2, 64], got 3"),
    (["--target", "generic"], "--sweep measures Fmax: give an FPGA --target (ecp5 or ice40)"),
])
def test_bad_sweep_is_one_line_without_a_file(tmp_path, capsys, argv, message):
    report = tmp_path / "sweep.json"
    argv = ["synth", "--sweep", "--target", "ecp5", *argv, "--report", str(report)]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert len(err) == 1 and message in err[0], err
    assert not report.exists()


def test_engine_block_table_adds_submodules_to_their_block():
    stat = {"modules": {
        "\\paro": {"num_cells_by_type": {"LUT4": 100, "TRELLIS_FF": 300}},                 # the harness
        "\\paro.engine": {"num_cells_by_type": {"LUT4": 7, "TRELLIS_DPR16X4": 4}},
        "\\paro.engine.feed": {"num_cells_by_type": {"LUT4": 10, "CCU2C": 2}},
        "\\paro.engine.feed.p_lanes": {"num_cells_by_type": {"LUT4": 5, "TRELLIS_FF": 3}},
        "\\paro.engine.score_buffer": {"num_cells_by_type": {"DP16KD": 12, "PFUMX": 1}},
        "\\paro.engine.array.pe_0_0": {"num_cells_by_type": {"MULT18X18D": 2}},
    }}
    table = block_table(stat)
    assert set(table) == {"engine", "feed", "score_buffer", "array"}
    assert table["feed"] == {"lut4": 15, "carry": 2, "flip_flops": 3, "brams": 0, "dsps": 0, "lutram": 0,
                             "wide_mux": 0}
    assert table["score_buffer"]["brams"] == 12 and table["array"]["dsps"] == 2 and table["engine"]["lutram"] == 4


@pytest.mark.parametrize("argv,message", [
    (["--top", "engine"], "--top engine needs an FPGA target (--target ecp5)"),
    (["--top", "core", "--target", "ecp5"], "unknown --top 'core'; choose one of array, engine"),
    (["--top", "engine", "--target", "ecp5", "--bitwidths", "0,8"], "the engine computes bitwidths"),
    (["--top", "engine", "--target", "ecp5", "--sweep"], "--sweep places arrays of several sizes"),
    (["--top", "engine", "--target", "ice40", "--no-place"], "--no-place gives the ECP5 per-block table"),
    (["--target", "ecp5", "--no-place"], "--no-place stops the engine's flow after Yosys"),
])
def test_bad_engine_synth_is_one_line_without_a_file(tmp_path, capsys, argv, message):
    report = tmp_path / "engine.json"
    assert main(["synth", *argv, "--report", str(report), "--build-dir", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
    assert len(err) == 1 and message in err[0], err
    assert not report.exists()


def test_engine_harness_closes_every_port():
    """The engine in its harness: every input bit of the elaborated engine module comes from the shift register
    (as many as the signature the harness counts), every output it drives is folded (its constant ones, like
    the AXI IDs, Yosys removes: the engine report measures the harness's flip-flops instead of counting them)."""
    config = AcceleratorConfig(rows=2, cols=2, block_size=16, head_dim=16, max_seq_len=64, kv_cache_blocks=2,
                               axi_data_bits=32)
    text = rtlil.convert(SynthHarness(config, "engine"), name="paro")        # elaborates the engine inside
    module = text.split("module \\paro.engine\n", 1)[1].split("\nend\n", 1)[0]
    ports = {"input": 0, "output": 0}
    for width, direction, name in re.findall(r"^\s*wire width (\d+) (input|output) \d+ +\\(\S+)", module,
                                             re.MULTILINE):
        if name not in ("clk", "rst"):
            ports[direction] += int(width)
    assert harness_input_bits(config, "engine") == ports["input"] + 32 and ports["input"] > 32 + 32   # rdata
    assert harness_flip_flops(config, "engine") - 32 - 1 - ports["input"] >= ports["output"] > 32 + 32   # wdata
    assert HARNESS_TOPS["engine"][0] is AttentionEngine
    assert "module \\paro.engine.score_buffer" in text and "module \\paro.engine.k_buffer" in text


def test_engine_critical_path_names_its_blocks():
    def step(cell, delay):
        return {"delay": delay, "from": {"cell": cell}, "to": {"cell": cell}, "type": "logic"}
    short = {"from": "posedge clk", "to": "posedge clk", "path": [step("engine.feed.a_FF", 1.0)]}
    long = {"from": "posedge clk", "to": "posedge clk", "path": [
        step("stimulus_TRELLIS_FF_Q", 0.5), step("engine.ctrl_LUT4_Z", 1.0), step("engine.score_unit.x_LUT4", 2.0),
        step("engine.score_unit.mul_MULT18X18D", 3.0), step("$abc$123$lut", 0.0),
        step("engine.score_buffer.bank0_DP16KD", 0.25)]}
    path = _critical_path({"critical_paths": [short, long]}, {"score_unit": {}, "score_buffer": {}, "feed": {}})
    assert path["blocks"] == ["harness", "engine", "score_unit", "unnamed", "score_buffer"]
    assert path["delay_ns"] == 6.75 and path["start"] == "stimulus_TRELLIS_FF_Q"
    assert path["end"] == "engine.score_buffer.bank0_DP16KD" and _critical_path({}, {}) is None


def test_block_table_of_the_harness_module_alone():
    stat = {"modules": {"\\paro": {"num_cells_by_type": {"TRELLIS_FF": 300, "LUT4": 9}},
                        "\\paro.engine": {"num_cells_by_type": {"TRELLIS_FF": 5}}}}
    assert block_table(stat, top="") == {"": {"lut4": 9, "carry": 0, "flip_flops": 300, "brams": 0, "dsps": 0,
                                              "lutram": 0, "wide_mux": 0}}


def test_engine_without_placement_reports_its_blocks(tmp_path, capsys):
    """``--no-place``: a 2x2 engine (B 16, d 16) through Yosys alone; the report's totals are its blocks' sums, every
    block of the engine has a row, and the buffers that map to block RAM are there."""
    report = tmp_path / "engine.json"
    argv = ["synth", "--top", "engine", "--target", "ecp5", "--no-place", "--rows", "2", "--cols", "2",
            "--block-size", "16", "--head-dim", "16", "--max-seq-len", "64", "--kv-cache-blocks", "2",
            "--report", str(report), "--build-dir", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads(report.read_text())["ecp5"]
    assert result["placed"] is False and "fmax_mhz" not in result
    blocks, cells = result["blocks"], result["engine_cells"]
    assert {"controller", "array", "score_unit", "output_stage", "feed", "score_buffer"} <= set(blocks)
    assert cells["lut4"] == sum(row["lut4"] for row in blocks.values()) > 0
    assert cells["luts"] == cells["lut4"] + 2 * cells["carry"]
    assert cells["brams"] == sum(row["brams"] for row in blocks.values()) > 0
    assert f"{cells['luts']} LUTs" in capsys.readouterr().out
