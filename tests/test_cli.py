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


def test_a_device_install_asked_to_train_says_which_extra_to_install(tmp_path):
    """Without torch (slimda's base install, as on a device) training commands name 'slimda[train]'; predict
    still starts."""
    import subprocess
    import sys

    from test_runtime import NO_TORCH

    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH)
    for command in ("train", "deploy", "eval"):
        done = subprocess.run([sys.executable, str(script), command, "--help"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and "pip install 'slimda[train]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, str(script), "predict", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "TensorRT" in done.stdout
