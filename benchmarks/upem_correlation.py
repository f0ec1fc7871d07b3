"""Is UPEM worth trusting? Rank correlation with true target accuracy over random sub-networks.

Trains a bank on mnist → digits (or takes one with --bank), scores ≥ 50 random configurations plus the
uniform widths (BN recalibrated on target): UPEM for every distance and true target accuracy (labels used
only here). Reports Spearman ρ and Kendall τ between -UPEM and accuracy, and the regret of picking the
lowest-UPEM configuration instead of the most accurate one within FLOPs bins. Writes
benchmarks/results/upem_correlation.csv (one row per distance) and upem_configs.csv (one row per config).

    python benchmarks/upem_correlation.py --iters 1500 --configs 60
    python benchmarks/upem_correlation.py --bank runs/mnist2digits
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import kendalltau, spearmanr

from slimda.data.domains import load_domain
from slimda.data.loading import image_batches
from slimda.model.bank import load_bank
from slimda.model.cost import count_flops
from slimda.model.heads import HEADS
from slimda.select.evaluate import head_probabilities, predict
from slimda.select.upem import DISTANCES, upem
from slimda.tables import print_table, write_csv_atomic
from slimda.train.config import TrainConfig
from slimda.train.trainer import Trainer

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", help="a trained run directory (default: train one)")
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", type=int, default=60)
    parser.add_argument("--bins", type=int, default=5, help="FLOPs bins for the regret (default: 5)")
    parser.add_argument("--target", default="digits")
    parser.add_argument("--name", default="upem_correlation", help="CSV name (default: upem_correlation)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.bank
        if run is None:
            run = Path(tmp) / "run"
            Trainer(TrainConfig(iters=args.iters, seed=args.seed), run, progress=False).fit()
        bank, meta = load_bank(run)
    prep = meta.preprocessing
    target = load_domain(args.target)
    dataset = target.dataset(prep)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))
    calibration = [x for x, _ in image_batches(dataset, 256, order[:1024].tolist())]
    images, labels = zip(*image_batches(dataset, 512))
    images, labels = list(images), torch.cat(labels)
    space = bank.space
    configs = [space.uniform(r) for r in (0.25, 0.5, 0.75)] + space.sample_many(
        args.configs, seed=args.seed + 1000, exclude=[space.largest()])
    anchor = predict(bank, space.largest(), calibration, images)
    rows = []
    for config in configs:
        out = predict(bank, config, calibration, images)
        flops = count_flops(bank.extract(config), (1, prep.channels, *prep.size))
        for head in HEADS:
            probs = head_probabilities(out, head, bank.num_classes)
            ref = head_probabilities(anchor, head, bank.num_classes)
            row = {"config_id": config.id, "head": head, "flops_m": round(flops / 1e6, 4),
                   "target_acc": float((probs.argmax(1) == labels).float().mean())}
            row.update({f"upem_{d}": upem(probs, ref, d) for d in DISTANCES})
            rows.append(row)
    table = pd.DataFrame(rows)
    configs_name = "upem_configs" + args.name.removeprefix("upem_correlation")
    write_csv_atomic(RESULTS / f"{configs_name}.csv", table.round(6).to_dict("records"))
    summary = []
    for head, group in table.groupby("head"):
        group = group.copy()
        group["bin"] = pd.qcut(group["flops_m"], args.bins, labels=False, duplicates="drop")
        for d in DISTANCES:
            col = f"upem_{d}"
            rho = spearmanr(-group[col], group["target_acc"]).statistic
            tau = kendalltau(-group[col], group["target_acc"]).statistic
            regrets = []
            for _, b in group.groupby("bin"):
                picked = b.loc[b[col].idxmin(), "target_acc"]
                regrets.append(b["target_acc"].max() - picked)
            summary.append({
                "head": head, "distance": d, "configs": len(group), "spearman_rho": round(rho, 4),
                "kendall_tau": round(tau, 4), "regret_pts_mean": round(100 * sum(regrets) / len(regrets), 3),
                "regret_pts_max": round(100 * max(regrets), 3), "flops_bins": len(regrets),
                # rank correlation only means something when the accuracies differ by more than a few images
                "acc_spread_pts": round(100 * (group["target_acc"].max() - group["target_acc"].min()), 3),
                "one_image_pts": round(100 / len(labels), 3), "bank": str(args.bank or f"trained {args.iters} steps"),
                "machine": platform.node(),
            })
    write_csv_atomic(RESULTS / f"{args.name}.csv", summary)
    print_table([{k: v for k, v in r.items() if k != "machine"} for r in summary])


if __name__ == "__main__":
    main()
