"""The command line as a whole: ``slimda --help`` and every command's ``--help`` print and exit 0 (a stray
``%`` in a help text makes argparse raise instead)."""

from __future__ import annotations

import pytest

from slimda.cli import COMMANDS, main


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)])
def test_every_help_prints(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out
