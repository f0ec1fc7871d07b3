"""The whole job end to end on the built-in mnist → digits task: train, profile, deploy, report.

Each stage reuses what an earlier run under the same folder finished (the bank, each table's rows), so a
run that was interrupted continues where it stopped. ``run_quickstart`` is what ``slimda quickstart`` runs.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

from slimda.console import say
from slimda.deploy.deployer import Deployer, Deployment, DeployOptions
from slimda.deploy.reports import bench_devices
from slimda.deploy.setup import BankRun, TargetScoring
from slimda.errors import ConfigError
from slimda.latency.table import LatencyTable
from slimda.model.space import WidthSpace
from slimda.select.budget import Budget, Budgets, latency_budget

STAGES = ("train", "profile", "deploy", "bench")


@dataclass(frozen=True)
class QuickstartOptions:
    """What ``slimda quickstart`` runs; checked when made (the messages name the command's options)."""

    out: Path
    devices: tuple[str, ...] = ("cpu-onnxruntime", "cpu-openvino")
    iters: int = 1000  # training steps
    budget_fraction: float = 0.5  # of the way from the smallest to the largest predicted latency
    fit_configs: int = 20  # whole sub-networks timed per table for its correction
    bench_configs: int = 60  # random sub-networks in the reports besides the uniform widths
    min_time: float = 0.3  # seconds each lookup-table entry is timed for at least
    seed: int = 0
    fresh: bool = False  # ignore what ``out`` already holds
    score_device: str = "auto"  # where sub-networks are scored (auto: a CUDA GPU when there is one)

    def __post_init__(self) -> None:
        if not 0 < self.budget_fraction <= 1:
            raise ConfigError(f"--budget-fraction must be in (0, 1], got {self.budget_fraction}")
        if self.min_time < 0:
            raise ConfigError(f"--min-time must be 0 or more, got {self.min_time}")
        if self.iters < 1:
            raise ConfigError(f"--iters must be positive, got {self.iters}")


def run_quickstart(opts: QuickstartOptions) -> None:
    """Every stage in turn under ``opts.out``; prints the summary table and where everything went."""
    out, devices = Path(opts.out), list(opts.devices)
    started = time.perf_counter()
    run_dir = out / "run"
    _stage(1, f"train digits-cnn on mnist → digits ({opts.iters} steps)")
    train(run_dir, opts.iters, opts.seed, opts.fresh)
    _stage(2, f"latency lookup tables: {', '.join(devices)}")
    profile(run_dir, devices, opts.fit_configs, opts.seed, opts.min_time)
    _stage(3, "deploy under a latency budget inside each device's range")
    bank_run = BankRun.open(run_dir)
    scorer = bank_run.scorer(TargetScoring("digits", calibration_images=512, score_images=1024, seed=opts.seed,
                                           device=opts.score_device))
    deployments = deploy(bank_run.deployer(scorer, _deploy_options(opts.seed), out / "deploy"), devices,
                         opts.budget_fraction)
    _stage(4, "reports and plots")
    written = bench_devices(bank_run, scorer, devices, out / "deploy", out / "bench", opts.bench_configs, opts.seed)
    summarise(out, deployments, run_dir, written, time.perf_counter() - started)


def _stage(number: int, text: str) -> None:
    say(f"[{number}/{len(STAGES)}] {text}")


def _deploy_options(seed: int) -> DeployOptions:
    from slimda.profilers.measurement import MeasureOptions
    from slimda.select.search import SearchSettings

    return DeployOptions(measure_options=MeasureOptions(min_time_s=0.5), settings=SearchSettings(seed=seed))


def train(run_dir: Path, iters: int, seed: int, fresh: bool) -> None:
    """Train, resume the checkpoint of an interrupted run, or reuse a finished one with the same settings."""
    from slimda.train.config import TrainConfig
    from slimda.train.trainer import Trainer

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
    from slimda.latency.build import build_table
    from slimda.latency.table import table_path
    from slimda.model.bank import load_bank
    from slimda.profilers.measurement import MeasureOptions

    bank, meta = load_bank(run_dir)
    size = meta.preprocessing.size
    options = MeasureOptions(min_time_s=min_time, min_runs=50)
    for name in devices:
        build_table(bank, name, options, table_path(run_dir, name), resolution=size, fit_configs=fit_configs,
                    seed=seed)


def budget_for(table: LatencyTable, space: WidthSpace, fraction: float) -> Budget:
    """A latency budget ``fraction`` of the way from the smallest to the largest predicted latency (to three
    significant digits, so that the messages stay readable)."""
    low, high = table.predict(space.smallest()), table.predict(space.largest())
    return latency_budget(low + fraction * (high - low))


def deploy(deployer: Deployer, devices: list[str], fraction: float) -> list[Deployment]:
    """Each device under a budget ``fraction`` of the way into its own predicted range."""
    from slimda.latency.table import load_table

    space = deployer.bank.space
    tables = {name: load_table(deployer.run_dir, name, bank=deployer.bank) for name in devices}
    return [deployer.deploy(name, Budgets(latency=budget_for(tables[name], space, fraction))) for name in devices]


def summarise(out: Path, deployments: list[Deployment], run_dir: Path, written: list[Path], seconds: float) -> None:
    """Write ``summary.csv``, print it, and the largest/smallest sub-networks' accuracy for reference."""
    from slimda.select.estimate import estimate_text
    from slimda.tables import print_table, write_csv_atomic

    rows = []
    for d in deployments:
        m = d.manifest
        rows.append({
            "device": m.device, "budget_ms": m.budget.latency.value if m.budget.latency else None,
            "config_id": m.network.config_id, "width": m.network.width, "predicted_ms": m.latency.predicted_ms,
            "measured_ms": m.latency.measured_ms, "within_budget": m.latency.within_budget, "upem": m.scores.upem,
            "est_acc": estimate_text(m.scores.estimate), "target_acc": m.scores.target_acc,
            "flops_m": m.network.flops_m,
        })
    write_csv_atomic(out / "summary.csv", rows)
    print()
    print_table(rows)
    print()
    with (run_dir / "eval.csv").open(newline="") as fh:
        evals = [r for r in csv.DictReader(fh) if r.get("test_head") == "True"]
    for r in evals:
        if r["config"] in ("largest", "smallest"):
            print(f"for reference, the {r['config']} sub-network: target accuracy {float(r['target_acc']):.4f}, "
                  f"{r['flops_m']} MFLOPs")
    print(f"deployed models: {out / 'deploy'}; reports and plots: {', '.join(str(p) for p in written)}")
    print(f"quickstart finished in {seconds / 60:.1f} min")
