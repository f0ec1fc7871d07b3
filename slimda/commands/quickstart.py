"""``slimda quickstart``: the whole job end to end on the built-in mnist → digits task."""

from __future__ import annotations

import argparse
import time
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

STAGES = ("train", "profile", "deploy", "bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from slimda.errors import ConfigError

    if not 0 < args.budget_fraction <= 1:
        raise ConfigError(f"--budget-fraction must be in (0, 1], got {args.budget_fraction}")
    if args.min_time < 0:
        raise ConfigError(f"--min-time must be 0 or more, got {args.min_time}")
    if args.iters < 1:
        raise ConfigError(f"--iters must be positive, got {args.iters}")
    out = Path(args.out)
    from slimda.commands.deploy import devices_from_args

    devices = devices_from_args(args.device or ["cpu-onnxruntime,cpu-openvino"])
    started = time.perf_counter()
    run_dir = out / "run"
    _stage(1, f"train digits-cnn on mnist → digits ({args.iters} steps)")
    train(run_dir, args.iters, args.seed, args.fresh)
    _stage(2, f"latency lookup tables: {', '.join(devices)}")
    profile(run_dir, devices, args.fit_configs, args.seed, args.min_time)
    _stage(3, "deploy under a latency budget inside each device's range")
    deployments, scorer, bank, meta = deploy(run_dir, out / "deploy", devices, args.budget_fraction, args.seed)
    _stage(4, "reports and plots")
    from slimda.commands.bench import bench_devices

    written = bench_devices(bank, meta, run_dir, scorer, devices, out / "deploy", out / "bench",
                            args.bench_configs, args.seed)
    summarise(out, deployments, run_dir, written, time.perf_counter() - started)
    return 0


def _stage(number: int, text: str) -> None:
    from slimda.console import say

    say(f"[{number}/{len(STAGES)}] {text}")


def train(run_dir: Path, iters: int, seed: int, fresh: bool) -> None:
    """Train, resume the checkpoint of an interrupted run, or reuse a finished one with the same settings."""
    import json

    from slimda.console import say
    from slimda.train.trainer import TrainConfig, Trainer

    cfg = TrainConfig(source="mnist", target="digits", arch="digits-cnn", iters=iters, seed=seed)
    config_file = run_dir / "config.json"
    same = False
    if config_file.is_file() and not fresh:
        saved = json.loads(config_file.read_text())
        same = {k: saved.get(k) for k in cfg.to_dict()} == cfg.to_dict()
    if same and (run_dir / "bank.pt").is_file() and (run_dir / "eval.csv").is_file():
        say(f"reusing the finished run in {run_dir}")
        return
    resume = same and (run_dir / "checkpoint.pt").is_file()
    if resume:
        say(f"resuming the interrupted run in {run_dir}")
    trainer = Trainer(cfg, run_dir, progress=True)
    summary = trainer.fit(resume=resume, force=not resume)
    trainer.evaluate()
    say(f"trained {summary['steps']} steps in {summary['train_seconds']:.0f} s")


def profile(run_dir: Path, devices: list[str], fit_configs: int, seed: int, min_time: float) -> None:
    """Each device's lookup table (``build_table`` resumes a partial one and re-times nothing it holds)."""
    from slimda.model.bank import load_bank
    from slimda.data.domains import Preprocessing
    from slimda.latency.build import build_table
    from slimda.latency.table import table_path
    from slimda.profilers.measurement import MeasureOptions

    bank, meta = load_bank(run_dir)
    size = Preprocessing.from_dict(meta["preprocessing"]).size
    options = MeasureOptions(min_time_s=min_time, min_runs=50)
    for name in devices:
        build_table(bank, name, options, table_path(run_dir, name), resolution=size, fit_configs=fit_configs,
                    seed=seed)


def budget_for(table, space, fraction: float) -> str:
    """A latency budget ``fraction`` of the way from the smallest to the largest predicted latency."""
    low, high = table.predict(space.smallest()), table.predict(space.largest())
    return f"{low + fraction * (high - low):.3g}ms"


def deploy(run_dir: Path, out: Path, devices: list[str], fraction: float, seed: int):
    from slimda.model.bank import load_bank
    from slimda.select.budget import parse_latency
    from slimda.deploy.deployer import Budgets, Deployer, DeployOptions
    from slimda.select.evaluate import TargetScorer, load_target_images
    from slimda.latency.table import load_table
    from slimda.profilers.measurement import MeasureOptions
    from slimda.select.search import SearchSettings

    bank, meta = load_bank(run_dir)
    target = load_target_images("digits", meta, 512, 1024, seed=seed)
    scorer = TargetScorer(bank, target, meta.get("test_head", "ca"))
    options = DeployOptions(measure_options=MeasureOptions(min_time_s=0.5), settings=SearchSettings(seed=seed))
    deployer = Deployer(bank, meta, run_dir, scorer, out, options, run_dir / "bank.pt")
    deployments = []
    for name in devices:
        budget = budget_for(load_table(run_dir, name), bank.space, fraction)
        deployments.append(deployer.deploy(name, Budgets(latency=parse_latency(budget))))
    return deployments, scorer, bank, meta


def summarise(out: Path, deployments, run_dir: Path, written: list[Path], seconds: float) -> None:
    from slimda.tables import print_table, write_csv_atomic

    rows = []
    for d in deployments:
        m = d.manifest
        rows.append({
            "device": m["device"], "budget_ms": m["budget"]["latency"]["value"], "config_id": m["config_id"],
            "width": m["width"], "predicted_ms": m["predicted_latency_ms"], "measured_ms": m["measured_latency_ms"],
            "within_budget": m["within_budget"], "upem": m["upem"], "target_acc": m["target_acc"],
            "flops_m": m["flops_m"],
        })
    write_csv_atomic(out / "summary.csv", rows)
    print()
    print_table(rows)
    print()
    import csv

    with (run_dir / "eval.csv").open(newline="") as fh:
        evals = [r for r in csv.DictReader(fh) if r.get("test_head") == "True"]
    for r in evals:
        if r["config"] in ("largest", "smallest"):
            print(f"for reference, the {r['config']} sub-network: target accuracy {float(r['target_acc']):.4f}, "
                  f"{r['flops_m']} MFLOPs")
    print(f"deployed models: {out / 'deploy'}; reports and plots: {', '.join(str(p) for p in written)}")
    print(f"quickstart finished in {seconds / 60:.1f} min")
