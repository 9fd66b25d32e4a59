"""Property-based fuzzing (hypothesis) of everything a user hands the tools: plan files, layer files, Q/K/V
files, configurations and the CLI. Every input either loads or ends in one :class:`ParoError` line; the CLI
exits 2 with one line and writes nothing.

Examples per test: ``PARO_FUZZ_EXAMPLES`` (default 150 in the suite; ``make soak`` runs 2,500 per test, over
10,000 in all). Hypothesis prints the failing input and its seed to replay it.
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.flows.cli import main
from paro.sw.contract import load_layer, save_layer
from paro.sw.plan import load_plan
from paro.sw.program import engine_layer
from paro.sw.reorder import TokenLayout
from paro.sw.workloads import load_qkv

EXAMPLES = int(os.environ.get("PARO_FUZZ_EXAMPLES", "150"))
# A loader that casts a float, complex or NaN array to integers without checking its dtype shows up as one of
# these warnings: they fail the test.
pytestmark = [pytest.mark.filterwarnings("error::numpy.exceptions.ComplexWarning"),
              pytest.mark.filterwarnings("error:invalid value encountered in cast:RuntimeWarning")]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _one_line(error):
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _npz(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


#: A replacement for one array: odd dtypes, shapes, NaN/inf, empty, huge dimensions (as shapes, not data).
REPLACEMENT = st.one_of(
    st.builds(lambda v, s: np.full(s, v), st.sampled_from([np.nan, np.inf, -np.inf, -1, 0, 255, 2**40, 1e30]),
              st.lists(st.integers(0, 5), max_size=4).map(tuple)),
    st.builds(lambda dt, s: np.zeros(s, dtype=dt), st.sampled_from(["u1", "i8", "f2", "f8", "c8", "U3", "?"]),
              st.lists(st.integers(0, 5), max_size=4).map(tuple)),
    st.builds(lambda n: np.zeros((n, 0)), st.integers(0, 3)),
    st.builds(lambda text: np.frombuffer(text.encode(), dtype=np.uint8), st.text(max_size=40)),
)


def _mutations(arrays):
    """A mutated copy of ``arrays``: one array replaced or removed, the header JSON edited, or an extra one."""
    names = sorted(arrays)
    return st.one_of(
        st.builds(lambda n, v: {**arrays, n: v}, st.sampled_from(names), REPLACEMENT),
        st.builds(lambda n: {k: v for k, v in arrays.items() if k != n}, st.sampled_from(names)),
        st.builds(lambda key, value: _edit_header(arrays, key, value),
                  st.sampled_from(["format", "version", "config", "layout", "orders", "heads", "entries",
                                   "source", "budget", "rows_max", "block_size", "n_tokens"]),
                  st.one_of(st.none(), st.integers(-2**40, 2**40), st.floats(allow_nan=True), st.text(max_size=8),
                            st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                      st.integers(), max_size=2))),
        st.builds(lambda v: {**arrays, "extra": v}, REPLACEMENT),
    )


def _edit_header(arrays, key, value):
    for name in sorted(arrays):
        if name.endswith("header"):
            header = json.loads(arrays[name].astype(np.uint8).tobytes().decode())
            if isinstance(header, dict):
                header[key] = value
            text = json.dumps(header).encode()
            return {**arrays, name: np.frombuffer(text, dtype=np.uint8)}
    return arrays


def _bytes_mutations(data):
    """Truncated, bit-flipped or extended bytes of a file."""
    return st.one_of(
        st.integers(0, len(data) - 1).map(lambda n: data[:n]),
        st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)).map(
            lambda p: data[:p[0]] + bytes([data[p[0]] ^ p[1]]) + data[p[0] + 1:]),
        st.binary(max_size=64).map(lambda extra: data + extra),
        st.binary(max_size=200),
    )


def _loads_or_refuses(load, path):
    try:
        load(path)
    except ParoError as error:
        _one_line(error)


@pytest.fixture(scope="module")
def plan_bytes(tiny_plan):
    return tiny_plan.read_bytes()


@pytest.fixture(scope="module")
def layer_path(tiny_plan, tmp_path_factory):
    plan = load_plan(tiny_plan)
    path = tmp_path_factory.mktemp("layer") / "layer.npz"
    save_layer(plan.config, engine_layer(plan, [0, 1]), path)
    return path


def _fuzz_file(tmp_path, data, load, strategy_of):
    path = tmp_path / "fuzz.npz"

    @FUZZ
    @given(strategy_of(data))
    def run(mutated):
        path.write_bytes(mutated)
        _loads_or_refuses(load, path)

    run()


def test_fuzz_plan_file_bytes(tmp_path, plan_bytes):
    _fuzz_file(tmp_path, plan_bytes, load_plan, _bytes_mutations)


def test_fuzz_plan_file_fields(tmp_path, plan_bytes, tiny_plan):
    _fuzz_file(tmp_path, plan_bytes, load_plan, lambda _: _mutations(_arrays(tiny_plan)).map(_npz))


def test_fuzz_layer_file(tmp_path, layer_path):
    data = layer_path.read_bytes()
    _fuzz_file(tmp_path, data, load_layer,
               lambda _: st.one_of(_mutations(_arrays(layer_path)).map(_npz), _bytes_mutations(data)))


def test_fuzz_qkv_file(tmp_path):
    layout = TokenLayout(frames=1, height=2, width=4, text_tokens=0)
    rng = np.random.default_rng(7)
    good = {n: rng.standard_normal((2, layout.tokens, 16)).astype(np.float32) for n in ("q", "k", "v")}
    _fuzz_file(tmp_path, _npz(good), lambda p: load_qkv(p, layout),
               lambda _: st.one_of(_mutations(good).map(_npz), _bytes_mutations(_npz(good))))


@FUZZ
@given(st.dictionaries(st.sampled_from(["rows", "cols", "block_size", "head_dim", "bitwidths", "acc_width",
                                        "max_seq_len", "max_kept_keys", "kv_cache_blocks", "exp_bits", "out_bits",
                                        "axi_data_bits", "max_heads", "score_frac_bits", "bogus"]),
                       st.one_of(st.none(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                                 st.text(max_size=4), st.lists(st.integers(-1, 9), max_size=5), st.booleans()),
                       max_size=6))
def test_fuzz_config(values):
    try:
        config = AcceleratorConfig.from_dict(values)
    except ParoError as error:
        _one_line(error)
        return
    assert AcceleratorConfig.from_dict(config.to_dict()) == config


@FUZZ
@given(args=st.lists(st.one_of(
    st.sampled_from(["generate", "calibrate", "simulate", "model", "project", "sweep", "formal", "plot",
                     "synth", "bench"]),
    st.sampled_from(["--rows", "--cols", "--block-size", "--density", "--avg-bits", "--plan", "--heads",
                     "--report", "-o", "--workload", "--kept-bits", "--top", "--bitwidths", "--max-seq-len",
                     "--target", "--only", "--arrays", "--engines", "--read-latency", "--bytes-per-cycle"]),
    st.sampled_from(["0", "-1", "3", "1e9", "nan", "inf", "", "x", "0,3,5", "/", "/nonexistent/dir/f.json",
                     "all", "2x3", "tiny"]),
), max_size=6))
def test_fuzz_cli_arguments(args, capsys, tmp_path, monkeypatch):
    """Random argument lists: any refusal is one line and exit 2 (the commands that would run long are cut
    to their checks by a missing or bad value; nothing is written outside tmp_path)."""
    monkeypatch.chdir(tmp_path)
    if any(a in args for a in ("calibrate", "simulate", "synth", "bench", "sweep", "formal", "project")) and \
            not any(a in ("-1", "nan", "", "x", "/", "2x3", "0,3,5", "/nonexistent/dir/f.json") for a in args):
        return                                  # a valid long run: not a fuzzing target
    try:
        status = main(args)
    except SystemExit as done:                  # argparse --help or usage
        status = done.code
    err = capsys.readouterr().err.strip()
    if status not in (0, None):
        assert status == 2, (args, err)
        last = err.splitlines()[-1] if err else ""
        assert last.startswith("paro: error: ") or last.startswith("usage:") or "error:" in last, (args, err)
        assert "Traceback" not in err, (args, err)


def test_fuzz_zip_with_a_pickled_member(tmp_path, plan_bytes):
    """An .npz whose member is an object array (a pickle) is refused, never unpickled."""
    path = tmp_path / "pickled.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(io.BytesIO(plan_bytes)) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("bitmap.npy", buffer.getvalue())
    with pytest.raises(ParoError) as error:
        load_plan(path)
    _one_line(error.value)
