"""paro soak: its refusals (the run itself, hundreds of heads on Verilator, is `make soak`)."""

import pytest

from paro.flows.cli import main


@pytest.mark.parametrize("args,message", [(["--heads", "0"], "expected a whole number >= 1"),
                                          (["--gap", "1.5"], "--gap in (0, 1)")])
def test_soak_refuses_bad_input(args, message, capsys):
    assert main(["soak", *args]) == 2
    assert message in capsys.readouterr().err
