"""paro liveness: the enumeration of bitmaps and the command's refusals (the run itself is ``make liveness``;
its report backs the README row)."""

import numpy as np
import pytest

from paro.flows.cli import main
from paro.flows.liveness import all_bitmaps


def test_every_legal_bitmap_once():
    two = list(all_bitmaps(2))
    assert len(two) == 8 * 8 and len({b.tobytes() for b in two}) == 64
    assert all(b.any(axis=1).all() and set(np.unique(b)) <= {0, 4, 8} for b in two)
    assert sum(1 for _ in all_bitmaps(3)) == 26 ** 3


@pytest.mark.parametrize("args, message", [(["--blocks", "5"], "--blocks must be in [1, 4]"),
                                           (["--latencies", "0,x"], "--latencies must be comma-separated"),
                                           (["--latencies", "-1"], "--latencies must be >= 0"),
                                           (["--heads-per-start", "65"], "--heads-per-start must be in [1, 64]")])
def test_bad_arguments_end_with_one_line(tmp_path, capsys, args, message):
    report = tmp_path / "liveness.json"
    assert main(["liveness", *args, "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not report.exists()
