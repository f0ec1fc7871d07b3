"""``slimda quickstart``: the whole job end to end on the built-in mnist → digits task."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """Train one model bank on MNIST (labelled) adapted to scikit-learn's UCI digits (unlabelled),
build latency lookup tables for this machine's CPU under ONNX Runtime and OpenVINO, deploy the sub-network
with the lowest UPEM under a latency budget inside each device's measured range, and write reports and plots.
Everything goes under --out; run it again after an interruption and it continues where it stopped (training
resumes from its checkpoint, lookup tables from their last row; finished stages are reused).

The target's labels are never used to train or to choose; they are read only to print target accuracy.

outputs (under --out):
  run/                 bank.pt, config.json, train_log.csv, eval.csv, latency/DEVICE.csv
  deploy/DEVICE/       model.onnx (+ model.xml/.bin for OpenVINO), manifest.json; deploy/deploy_report.csv
  bench/DEVICE.csv     every scored sub-network: predicted latency, UPEM, target accuracy, Pareto front
  bench/DEVICE.png     UPEM and accuracy against latency with the deployed sub-network marked
  summary.csv          the table printed at the end
"""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slimda.model.compute import DEVICES

    parser.add_argument("--out", default="quickstart-out", help="output folder (default: quickstart-out)")
    parser.add_argument("--iters", type=int, default=1000, help="training steps (default: 1000, about 4 minutes "
                        "on 2 cores)")
    parser.add_argument("--device", action="append", metavar="DEVICE",
                        help="devices (default: cpu-onnxruntime and cpu-openvino)")
    parser.add_argument("--budget-fraction", type=float, default=0.5,
                        help="latency budget per device, as a fraction of the way from the smallest to the largest "
                        "sub-network's predicted latency (default: 0.5)")
    parser.add_argument("--fit-configs", type=int, default=20,
                        help="whole sub-networks timed per lookup table for its correction (default: 20)")
    parser.add_argument("--bench-configs", type=int, default=60,
                        help="random sub-networks in the reports besides the uniform widths (default: 60)")
    parser.add_argument("--min-time", type=float, default=0.3, metavar="SECONDS",
                        help="time each lookup-table entry for at least this long (default: 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training, search and reports (default: 0)")
    parser.add_argument("--fresh", action="store_true", help="start over: ignore what --out already holds")
    parser.add_argument("--score-device", choices=DEVICES, default="auto",
                        help="where deploy and the reports score sub-networks: auto = a CUDA GPU when there is one "
                        "(default: auto)")


def run(args: argparse.Namespace) -> int:
    from slimda.commands.options import devices_from_args
    from slimda.deploy.quickstart import QuickstartOptions, run_quickstart

    options = QuickstartOptions(
        out=Path(args.out), devices=tuple(devices_from_args(args.device or ["cpu-onnxruntime,cpu-openvino"])),
        iters=args.iters, budget_fraction=args.budget_fraction, fit_configs=args.fit_configs,
        bench_configs=args.bench_configs, min_time=args.min_time, seed=args.seed, fresh=args.fresh,
        score_device=args.score_device)
    run_quickstart(options)
    return 0
