"""Command-line entry points.

``slimda <command>`` dispatches to one module per command; ``slimda-train`` and friends are the same
commands installed as their own scripts. Each command module exposes ``add_arguments(parser)`` and
``run(args) -> int`` and is imported only when its command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from slimda.errors import SlimdaError

# command name -> (module, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("slimda.commands.info", "show the width configurations of a backbone with FLOPs and parameters"),
    "train": ("slimda.commands.train", "train one model bank adapted to an unlabelled target domain"),
    "eval": ("slimda.commands.eval", "score sub-networks of a bank on target images (accuracy per head, UPEM)"),
    "profile": ("slimda.commands.profile", "measure latency on a device; build a bank's latency lookup table"),
    "deploy": ("slimda.commands.deploy", "pick, export and re-measure the best sub-network for each device's budget"),
    "predict": ("slimda.commands.predict", "classify image files with a deployed model, without torch"),
    "label-estimate": ("slimda.commands.label_estimate",
                       "target accuracy with a 90%% interval from the images deploy --label-budget picked"),
    "bench": ("slimda.commands.bench", "reports and plots: UPEM (and accuracy) against latency, Pareto front"),
    "quickstart": ("slimda.commands.quickstart", "train, profile, deploy and report on the built-in digits task"),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimda",
        description="Slimmable domain adaptation: train one model bank, profile it per device, deploy per budget.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# what 'slimda[train]' adds to the base install (slimda.runtime's NumPy and Pillow): import names
TRAIN_MODULES = frozenset({"torch", "torchvision", "pandas", "fvcore", "onnx", "mlxtend", "sklearn", "scipy"})


def _missing_extra(err: ModuleNotFoundError, prog: str) -> int:
    """A command run on a device install (no torch): say which extra brings what it needs."""
    root = (err.name or "").split(".")[0]
    if root not in TRAIN_MODULES:
        raise err
    print(f"{prog}: error: {root} is not installed; this command needs slimda's training dependencies: "
          "pip install 'slimda[train]' (a device install runs slimda predict only)", file=sys.stderr)
    return 2


def _run_command(name: str, argv: Sequence[str], prog: str) -> int:
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(
            prog=prog,
            description=getattr(module, "DESCRIPTION", help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
    except ModuleNotFoundError as err:
        return _missing_extra(err, prog)
    args = parser.parse_args(list(argv))
    try:
        return int(module.run(args) or 0)
    except SlimdaError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        return _missing_extra(err, prog)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``slimda COMMAND ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _build_parser().parse_args(argv)  # prints usage / help and exits
        return 2
    return _run_command(argv[0], argv[1:], prog=f"slimda {argv[0]}")


def command_main(name: str) -> int:
    """Entry point of a stand-alone script such as ``slimda-train`` (same as ``slimda train``)."""
    return _run_command(name, sys.argv[1:], prog=f"slimda-{name}")


def train_main() -> int:
    return command_main("train")


def profile_main() -> int:
    return command_main("profile")


def deploy_main() -> int:
    return command_main("deploy")


def bench_main() -> int:
    return command_main("bench")


def predict_main() -> int:
    return command_main("predict")


if __name__ == "__main__":  # python -m slimda.cli ... (what torchrun -m runs)
    sys.exit(main())
