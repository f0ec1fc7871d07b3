"""Bank vs. individually trained widths on mnist → digits (digits-cnn).

Per seed: (a) the SlimDA bank (objective + SEED + OSTC), (b) the same bank without SEED/OSTC, (c) each
uniform width 0.25/0.5/0.75/1.0 trained alone with the same objective for the same number of steps,
(d) each width trained alone source-only. Target accuracy (labels used only for scoring) at every width
and head, and training times, all measured in this one run. Writes benchmarks/results/NAME.csv (one row
per seed, method, width, head) and NAME_summary.csv (mean ± std over seeds).

    python benchmarks/bank_vs_individual.py --iters 1500 --seeds 0,1,2
    python benchmarks/bank_vs_individual.py --objective confusion --target-labeled 10
    python benchmarks/bank_vs_individual.py --jobs 12 --device cuda   # a GPU machine: runs side by side

With --jobs > 1 the runs share the machine, so each run's time is longer than alone; the bank against
the four widths alone is still a fair ratio, since both were measured under the same load.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from slimda.data.loading import image_batches
from slimda.select.evaluate import evaluate_configs
from slimda.tables import print_table, write_csv_atomic
from slimda.train.config import TrainConfig
from slimda.train.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
WIDTHS = (0.25, 0.5, 0.75, 1.0)


def train_and_score(cfg: TrainConfig, run_dir: Path, widths: dict[str, float],
                    threads: int = 0) -> tuple[list[dict], float]:
    """Train ``cfg`` and score the named uniform widths (BN recalibrated on target) for every head."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    trainer = Trainer(cfg, run_dir, progress=False)
    started = time.perf_counter()
    trainer.fit(force=True)
    seconds = time.perf_counter() - started
    bank = trainer.bank.cpu().eval()  # scored on the CPU, wherever it was trained
    n_cal = min(cfg.eval_calibration_images, len(trainer.target_ds))
    order = torch.randperm(len(trainer.target_ds), generator=torch.Generator().manual_seed(cfg.seed))
    calibration = [x for x, _ in image_batches(trainer.target_ds, 256, order[:n_cal].tolist())]
    images, labels = zip(*image_batches(trainer.target_ds, 512))
    configs = [(name, bank.space.uniform(r)) for name, r in widths.items()]
    rows = evaluate_configs(bank, configs, calibration, list(images), torch.cat(labels))
    return rows, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--objective", default="symnet")
    parser.add_argument("--target-labeled", type=int, default=0)
    parser.add_argument("--model-batch", type=int, default=4)
    parser.add_argument("--device", default="auto", help="training device: auto, cpu, cuda")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side in worker processes")
    parser.add_argument("--name", default=None, help="CSV name (default: bank_vs_individual[_objective][_N])")
    parser.add_argument("--summarise-only", action="store_true",
                        help="only rewrite NAME_summary.csv from the per-run NAME.csv already in results/")
    args = parser.parse_args()
    name = args.name or "bank_vs_individual" + (f"_{args.objective}" if args.objective != "symnet" else "") + (
        f"_{args.target_labeled}labeled" if args.target_labeled else "")
    if args.summarise_only:
        summarise(pd.read_csv(RESULTS / f"{name}.csv"), name)
        return
    base = dict(iters=args.iters, objective=args.objective, target_labeled=args.target_labeled, device=args.device)
    rows, tasks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            runs = {
                "a_slimda_bank": (TrainConfig(**base, seed=seed, model_batch=args.model_batch), WIDTHS),
                "b_bank_no_seed": (TrainConfig(**base, seed=seed, model_batch=args.model_batch,
                                               seed_ensemble=False), WIDTHS),
            }
            for w in WIDTHS:
                runs[f"c_alone_{w:g}"] = (TrainConfig(**base, seed=seed, widths=str(w), model_batch=1,
                                                      seed_ensemble=False), (w,))
                runs[f"d_source_only_{w:g}"] = (TrainConfig(**{**base, "objective": "source-only"}, seed=seed,
                                                            widths=str(w), model_batch=1, seed_ensemble=False), (w,))
            for run_name, (cfg, widths) in runs.items():
                named = {f"{w:g}": w for w in widths}
                # a single-width bank's only configuration is its largest
                tasks.append((seed, run_name, cfg, Path(tmp) / f"{run_name}-{seed}",
                              named if len(widths) > 1 else {f"{widths[0]:g}": 1.0}))
        threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(train_and_score, cfg, run_dir, named, threads)
                       for _, _, cfg, run_dir, named in tasks]
            for (seed, run_name, *_), future in zip(tasks, futures):
                scored, seconds = future.result()
                method = run_name if run_name.startswith(("a_", "b_")) else run_name.rsplit("_", 1)[0]
                for r in scored:
                    rows.append({"seed": seed, "method": method, "run": run_name, "width": float(r["config"]),
                                 "head": r["head"],
                                 "target_acc": r["target_acc"], "train_seconds": round(seconds, 2),
                                 "iters": args.iters, "objective": args.objective,
                                 "target_labeled": args.target_labeled, "jobs": args.jobs,
                                 "device": cfg.device, "machine": platform.node()})
                print(f"seed {seed} {run_name}: {seconds:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(RESULTS / f"{name}.csv", rows)
    summarise(table, name)


def summarise(table: pd.DataFrame, name: str) -> None:
    """NAME_summary.csv: mean ± std over seeds per method, width and head, and training seconds per seed."""
    summary = (table.groupby(["method", "width", "head"])["target_acc"].agg(["mean", "std"]).reset_index())
    summary["mean"] = (summary["mean"] * 100).round(2)
    summary["std"] = (summary["std"] * 100).round(2)
    summary = summary.rename(columns={"mean": "target_acc_pct_mean", "std": "target_acc_pct_std"})
    if "run" not in table:  # CSVs written before the run column: a bank is one run, (c)/(d) one per width
        bank = table["method"].str.startswith(("a_", "b_"))
        table = table.assign(run=table["method"].where(bank, table["method"] + "_" + table["width"].astype(str)))
    # one training run per (seed, run): a bank's four width rows share one run, (c)'s widths are four runs
    times = table.drop_duplicates(["seed", "run"]).groupby(["seed", "method"])["train_seconds"].sum()
    times = times.groupby("method").mean()
    summary["train_seconds_mean"] = summary["method"].map(times).round(1)
    write_csv_atomic(RESULTS / f"{name}_summary.csv", summary.to_dict("records"))
    print_table(summary.to_dict("records"))
    alone = times[[m for m in times.index if m.startswith("c_")]].sum()
    print(f"training time per seed: bank (a) {times['a_slimda_bank']:.0f} s vs the four widths alone (c) "
          f"{alone:.0f} s (ratio {times['a_slimda_bank'] / alone:.2f})")


if __name__ == "__main__":
    main()
