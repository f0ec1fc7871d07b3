"""``slimda bench``: per-device reports and plots of a bank — UPEM (and accuracy) against latency."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """Score sub-networks of a trained bank on target images (UPEM; target accuracy too when the
target has class folders, for the report only) and predict their latency on each device from its lookup
table. Writes per device OUT/DEVICE.csv (one row per sub-network, with the Pareto front flagged) and
OUT/DEVICE.png (UPEM — and accuracy — against predicted latency, the front, and the deployed sub-networks of
DEPLOY/deploy_report.csv marked with their budget and measured latency).

examples:
  slimda bench --bank runs/mnist2digits --target digits
  slimda bench --bank runs/site --target /data/site-b --device cpu-openvino --configs 100 --out reports/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slimda.commands.eval import add_target_scoring_arguments

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


def lut_devices(run_dir: Path) -> list[str]:
    """Devices with a lookup table in RUN/latency/ (validation files excluded)."""
    folder = run_dir / "latency"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.csv") if not p.stem.endswith("-validation"))


def run(args: argparse.Namespace) -> int:
    from slimda.model.bank import load_bank
    from slimda.errors import ConfigError
    from slimda.select.evaluate import TargetScorer, load_target_images

    if args.configs < 0:
        raise ConfigError(f"--configs must be 0 or more, got {args.configs}")
    bank, meta = load_bank(args.bank)
    run_dir = Path(args.bank) if Path(args.bank).is_dir() else Path(args.bank).parent
    from slimda.commands.deploy import devices_from_args

    devices = devices_from_args(args.device) if args.device else lut_devices(run_dir)
    if not devices:
        raise ConfigError(f"no latency table in {run_dir / 'latency'}: build one with "
                          f"`slimda-profile --device cpu-onnxruntime --bank {run_dir}`, or name --device")
    target = load_target_images(args.target, meta, args.calibration_images, args.score_images, seed=args.seed)
    scorer = TargetScorer(bank, target, meta.get("test_head", "ca"), args.distance)
    deploy_dir = Path(args.deployments) if args.deployments else run_dir / "deploy"
    out = Path(args.out) if args.out else run_dir / "bench"
    written = bench_devices(bank, meta, run_dir, scorer, devices, deploy_dir, out, args.configs, args.seed)
    for path in written:
        print(f"wrote {path}")
    return 0


def bench_devices(bank, meta, run_dir: Path, scorer, devices: list[str], deploy_dir: Path, out: Path,
                  configs: int, seed: int) -> list[Path]:
    """Reports and plots for each device; returns the files written."""
    from slimda.console import progress_bar
    from slimda.model.cost import BankCosts
    from slimda.data.domains import Preprocessing
    from slimda.latency.table import load_table
    from slimda.profilers.devices import get_device
    from slimda.deploy.reports import device_rows, plot_device, read_deployments, report_configs, write_device_report

    prep = Preprocessing.from_dict(meta["preprocessing"])
    costs = BankCosts(bank, (prep.channels, *prep.size))
    tables = {name: load_table(run_dir, get_device(name).name) for name in devices}  # all present, or fail now
    written = []
    for name, table in tables.items():
        deployments = read_deployments(deploy_dir / "deploy_report.csv", name)
        deployed = [bank.space.from_id(d["config_id"]) for d in deployments]
        chosen = report_configs(bank.space, configs, seed, deployed)
        with progress_bar(len(chosen), f"bench {name}", "config") as bar:
            rows = device_rows(name, chosen, scorer, table.predict, costs.flops, costs.params,
                               bank.space.ratio_of, bar.update)
        written.append(write_device_report(rows, out / f"{name}.csv"))
        title = f"{bank.arch} on {name}: target {scorer.target.name}, head {scorer.head}"
        written.append(plot_device(rows, deployments, out / f"{name}.png", title))
    return written
