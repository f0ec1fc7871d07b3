"""SEED's open choices, decided by measurement: how confidence is scored and the sharpening temperature.

Trains the default bank (mnist → digits, digits-cnn, the default objective) once per combination of
``--seed-confidence`` {max, entropy} and ``--seed-temperature`` and scores the uniform widths 0.25/0.5/0.75/1.0
for every test-time head (target labels used only to score). Writes benchmarks/results/seed_choices.csv
(one row per combination, width and head) and prints the mean over widths per combination and head.

    python benchmarks/seed_choices.py --iters 1000 --temperatures 0.25,0.5,1.0 --seeds 0
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import pandas as pd
from bank_vs_individual import WIDTHS, train_and_score

from slimda.tables import print_table, write_csv_atomic
from slimda.train.config import TrainConfig
from slimda.train.seed import CONFIDENCES

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--temperatures", default="0.25,0.5,1.0")
    parser.add_argument("--objective", default=TrainConfig.objective)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            for confidence in CONFIDENCES:
                for temperature in (float(t) for t in args.temperatures.split(",")):
                    cfg = TrainConfig(iters=args.iters, seed=seed, objective=args.objective,
                                      seed_confidence=confidence, seed_temperature=temperature)
                    name = f"{confidence}-{temperature:g}-{seed}"
                    scored, seconds = train_and_score(cfg, Path(tmp) / name, {f"{w:g}": w for w in WIDTHS})
                    for r in scored:
                        rows.append({"seed": seed, "seed_confidence": confidence, "seed_temperature": temperature,
                                     "width": float(r["config"]), "head": r["head"], "target_acc": r["target_acc"],
                                     "upem": r["upem"], "train_seconds": round(seconds, 1), "iters": args.iters,
                                     "objective": args.objective, "machine": platform.node()})
                    print(f"{name}: {seconds:.0f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(RESULTS / "seed_choices.csv", rows)
    table = pd.DataFrame(rows)
    summary = (table.groupby(["seed_confidence", "seed_temperature", "head"])["target_acc"]
               .agg(["mean", "min"]).mul(100).round(2).reset_index()
               .rename(columns={"mean": "acc_pct_mean_over_widths", "min": "acc_pct_worst_width"}))
    print_table(summary.to_dict("records"))


if __name__ == "__main__":
    main()
