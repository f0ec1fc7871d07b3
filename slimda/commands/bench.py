"""``slimda bench``: per-device reports and plots of a bank — UPEM (and accuracy) against latency."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """Score sub-networks of a trained bank on target images (UPEM; target accuracy too when the
target has class folders, for the report only) and predict their latency on each device from its lookup
table, in every precision the device has a table for (RUN/latency/DEVICE[-PRECISION].csv; int8 sub-networks
are quantized on target images and scored as quantized, which takes a while per sub-network). Writes per
device OUT/DEVICE.csv (one row per sub-network and precision, each precision's Pareto front flagged) and
OUT/DEVICE.png (UPEM — and accuracy — against predicted latency, one series per precision, the fronts, and the
deployed sub-networks of DEPLOY/deploy_report.csv marked with their budget and measured latency).

examples:
  slimda bench --bank runs/mnist2digits --target digits
  slimda bench --bank runs/site --target /data/site-b --device cpu-openvino --configs 100 --out reports/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slimda.commands.options import add_int8_arguments, add_target_scoring_arguments

    parser.add_argument("--bank", required=True, metavar="RUN", help="run directory written by slimda-train")
    parser.add_argument("--target", required=True, metavar="DATA", help="target images: built-in name or folder")
    parser.add_argument("--device", action="append", metavar="DEVICE",
                        help="devices to report (repeat or comma-separate; default: every device with a table "
                        "in RUN/latency/)")
    parser.add_argument("--deployments", metavar="DIR",
                        help="folder with deploy_report.csv whose points are marked (default: RUN/deploy)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: RUN/bench)")
    parser.add_argument("--configs", type=int, default=60, help="random sub-networks besides the uniform "
                        "widths (default: 60)")
    add_target_scoring_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sub-networks and images")
    add_int8_arguments(parser, search=False)


def run(args: argparse.Namespace) -> int:
    from slimda.commands.options import check_output_folder, devices_from_args, int8_from_args, target_scoring_from_args
    from slimda.deploy.reports import bench_devices, lut_devices
    from slimda.deploy.setup import BankRun
    from slimda.errors import ConfigError

    if args.configs < 0:
        raise ConfigError(f"--configs must be 0 or more, got {args.configs}")
    check_output_folder(args.out)
    bank_run = BankRun.open(args.bank)
    run_dir = bank_run.run_dir
    devices = devices_from_args(args.device) if args.device else lut_devices(run_dir)
    if not devices:
        raise ConfigError(f"no latency table in {run_dir / 'latency'}: build one with "
                          f"`slimda-profile --device cpu-onnxruntime --bank {run_dir}`, or name --device")
    scorer = bank_run.scorer(target_scoring_from_args(args))
    deploy_dir = Path(args.deployments) if args.deployments else run_dir / "deploy"
    out = Path(args.out) if args.out else run_dir / "bench"
    for path in bench_devices(bank_run, scorer, devices, deploy_dir, out, args.configs, args.seed,
                              int8_from_args(args)):
        print(f"wrote {path}")
    return 0
