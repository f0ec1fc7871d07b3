"""How much target accuracy does choosing by UPEM (no labels) give up?

On a trained mnist → digits bank, for budgets across the range (latency on a device from its lookup table,
and FLOPs): the UPEM search's pick against (1) the most accurate configuration among the candidates the
search scored (the issue's oracle), (2) the most accurate of a wider random sample under the same budget,
and (3) the largest uniform width that fits. Target labels are read only to score. Writes
benchmarks/results/search_regret.csv and prints the mean regret in points.

    python benchmarks/search_regret.py --bank quickstart-out/run
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from slimda.latency.table import load_table
from slimda.model.bank import load_bank
from slimda.model.cost import BankCosts
from slimda.select.evaluate import TargetScorer, load_target_images
from slimda.select.search import Constraint, SearchSettings, evolutionary_search
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", default="quickstart-out/run")
    parser.add_argument("--target", default="digits")
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--budgets", type=int, default=10, help="budgets per kind (default: 10)")
    parser.add_argument("--sample", type=int, default=300, help="random configurations of the wider oracle")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bank, meta = load_bank(args.bank)
    prep = meta.preprocessing
    target = load_target_images(args.target, meta, 512, 0, seed=args.seed)  # score on every target image
    if target.labels is None:
        raise SystemExit(f"{args.target} has no labels: regret needs labels (read only to score)")
    scorer = TargetScorer(bank, target, meta.test_head)
    costs = BankCosts(bank, (prep.channels, *prep.size))
    table = load_table(args.bank, args.device)
    space = bank.space
    sample = space.sample_many(args.sample, args.seed + 777)
    uniform = [space.uniform(r) for r in space.ratios]
    kinds = {"latency_ms": table.predict, "mflops": lambda c: costs.flops(c) / 1e6}
    rows = []
    for kind, predict in kinds.items():
        low, high = predict(space.smallest()), predict(space.largest())
        for i, limit in enumerate(np.linspace(low * 1.05, high * 0.95, args.budgets)):
            constraint = Constraint(kind, predict, float(limit))
            result = evolutionary_search(space, scorer.upem, [constraint], SearchSettings(seed=args.seed + i))
            pick = scorer.score(result.best).target_acc
            searched = [scorer.score(space.from_id(cid)).target_acc for cid in result.evaluated]
            wider = [scorer.score(c).target_acc for c in sample if constraint.allows(c)] + searched
            fitting = [c for c in uniform if constraint.allows(c)]
            largest_uniform = scorer.score(fitting[-1]).target_acc if fitting else float("nan")
            rows.append({
                "budget_kind": kind, "budget": round(float(limit), 6), "picked": result.best.id,
                "picked_acc": round(pick, 5), "oracle_searched_acc": round(max(searched), 5),
                "oracle_wider_acc": round(max(wider), 5), "largest_uniform_acc": round(largest_uniform, 5),
                "regret_searched_pts": round(100 * (max(searched) - pick), 3),
                "regret_wider_pts": round(100 * (max(wider) - pick), 3),
                "gain_over_uniform_pts": round(100 * (pick - largest_uniform), 3),
                "candidates": len(result.evaluated), "machine": platform.node(),
            })
            print(f"{kind} ≤ {limit:.4g}: pick {pick:.4f}, oracle {max(searched):.4f} (wider {max(wider):.4f}), "
                  f"largest uniform {largest_uniform:.4f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(RESULTS / "search_regret.csv", rows)
    summary = []
    for kind in kinds:
        mine = [r for r in rows if r["budget_kind"] == kind]
        summary.append({"budget_kind": kind, "budgets": len(mine),
                        **{f"{col}_mean": round(float(np.mean([r[col] for r in mine])), 3)
                           for col in ("regret_searched_pts", "regret_wider_pts", "gain_over_uniform_pts")},
                        "regret_searched_pts_max": max(r["regret_searched_pts"] for r in mine)})
    print_table(summary)


if __name__ == "__main__":
    main()
