"""paro sweep: the Pareto front, and a small sweep through a local Dask cluster with its checks."""

import json

import pytest

from paro.flows.cli import main
from paro.flows.sweep import SRAM_TRANSISTORS_PER_BIT, pareto_front


def test_pareto_front_keeps_exactly_the_undominated_points():
    points = [(5, 1), (4, 2), (4, 3), (1, 9), (6, 0.5), (4, 2), (7, 7), (1, 9.5)]
    # (4, 3) loses to (4, 2); (7, 7) to most; (1, 9.5) to (1, 9); the duplicates (4, 2) both stay
    assert pareto_front(points) == [0, 1, 3, 4, 5]
    assert pareto_front([(1, 2, 3), (2, 1, 3), (1, 2, 4), (0, 5, 5)]) == [0, 1, 3]


def test_sweep_on_a_local_dask_cluster(tmp_path, capsys):
    report = tmp_path / "sweep.json"
    assert main(["sweep", "--workload", "tiny", "--arrays", "2x2,4x4", "--block-sizes", "16", "--densities",
                 "0.4,0.6", "--kept-bits", "6", "--kv-cache-blocks", "3", "--workers", "2",
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "4 points on Dask (local)" in out and "Pareto front (latency, area) at density 0.4" in out
    r = json.loads(report.read_text())
    assert report.with_suffix(".png").is_file()
    assert r["dask"] == {"scheduler": "local", "workers": 2} and len(r["points"]) == 4
    pe = r["pe"]["16"]["cmos_transistors"]
    for p in r["points"]:
        assert p["area_transistors"] == p["rows"] * p["cols"] * pe + SRAM_TRANSISTORS_PER_BIT * p["buffer_bits"]
        assert 0 < p["utilization"] <= 1 and p["cycles"] >= p["ideal_cycles"]
        assert p["latency_us"] == pytest.approx(p["cycles"] / 1e3)
    by = {(p["rows"], p["density_target"]): p for p in r["points"]}
    for d in (0.4, 0.6):
        small, big = by[2, d], by[4, d]
        # the same plan on four times the PEs: fewer cycles, more area, the same buffers
        assert big["cycles"] < small["cycles"] and big["area_transistors"] > small["area_transistors"]
        assert big["buffer_bits"] == small["buffer_bits"] and big["density"] == small["density"]
        assert small["pareto_at_density"] and big["pareto_at_density"]
    assert by[2, 0.4]["cycles"] < by[2, 0.6]["cycles"]


@pytest.mark.parametrize("args,message", [
    (["--workload", "huge"], "unknown workload 'huge'"),
    (["--arrays", "3x4"], "--arrays: 3x4: rows and columns must be powers of two"),
    (["--arrays", "4by4"], "--arrays must be a comma-separated list"),
    (["--kept-bits", "2"], "--kept-bits: 2.0 bits per kept block"),
    (["--densities", "0"], "--densities: density 0.0 not in (0, 1]"),
    (["--workload", "tiny", "--block-sizes", "128"], "block size 128 is larger than the tiny workload's 96 tokens"),
])
def test_sweep_refuses_bad_input(tmp_path, capsys, args, message):
    report = tmp_path / "s.json"
    assert main(["sweep", *args, "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paro: error: ") and message in err and "\n" not in err
    assert not report.exists()
