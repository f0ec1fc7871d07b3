"""Does searching width × precision (``--precision auto``) deploy better models than fp32 alone?

For each CPU device, ten latency budgets from below the smallest fp32 sub-network's predicted latency to the
largest's; at each budget a full deploy with ``--precision fp32`` and one with ``--precision auto`` (same
search settings and seed; both re-measured on the device, retried when over). Reports the target accuracy
of what each deployed, as deployed (the int8 model's own, labels read for this report only), the measured
latency against budget × 1.05, the precision auto chose, and the budgets only auto could meet. Needs the fp32
and int8 tables of each device (``slimda-profile --device D --bank RUN [--precision int8]``).
Writes benchmarks/results/deploy_precision_sweep{TAG}.csv (one row per deploy) and ..._summary.csv.

    python benchmarks/deploy_precision_sweep.py --bank /tmp/qs/run
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from slimda.deploy.deployer import DeployOptions
from slimda.deploy.setup import BankRun, TargetScoring
from slimda.latency.table import load_table
from slimda.profilers.measurement import MeasureOptions
from slimda.select.budget import Budgets, parse_latency
from slimda.select.search import InfeasibleBudget, SearchSettings
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 1.05
COLUMNS = ("device", "budget_ms", "mode", "status", "precision", "config_id", "width", "predicted_ms", "measured_ms",
           "measured_over_budget", "within_5pct", "upem", "upem_fp32", "target_acc", "attempts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", default="quickstart-out/run", help="trained run with fp32 and int8 tables")
    parser.add_argument("--target", default="digits")
    parser.add_argument("--devices", default="cpu-onnxruntime,cpu-openvino")
    parser.add_argument("--budgets", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    run = BankRun.open(args.bank)
    space = run.bank.space
    scorer = run.scorer(TargetScoring(args.target, calibration_images=512, score_images=1024, seed=args.seed))
    options = DeployOptions(measure_options=MeasureOptions(), settings=SearchSettings(seed=args.seed), progress=False)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        deployer = run.deployer(scorer, options, tmp)
        for device in args.devices.split(","):
            fp32, int8 = load_table(run.run_dir, device, "fp32"), load_table(run.run_dir, device, "int8")
            floor_fp32 = fp32.predict(space.smallest())
            floor_int8 = min(int8.predict(c) for c in (space.smallest(), *(space.uniform(r) for r in space.ratios)))
            high = fp32.predict(space.largest())
            budgets = np.geomspace(0.8 * floor_fp32, high, args.budgets)
            mine = []
            for budget_ms in budgets:
                budget = Budgets(latency=parse_latency(f"{budget_ms:.6f}ms"))
                for mode in ("fp32", "auto"):
                    options.precision = mode
                    deployer.out_dir = Path(tmp) / f"{device}-{budget_ms:.6f}-{mode}"
                    row = {"device": device, "budget_ms": round(float(budget_ms), 6), "mode": mode}
                    try:
                        d = deployer.deploy(device, budget)
                    except InfeasibleBudget:
                        mine.append({**row, "status": "infeasible"})
                        continue
                    m = d.manifest
                    measured = m.latency.measured_ms
                    mine.append({**row, "status": "ok", "precision": m.precision.precision,
                                 "config_id": m.network.config_id, "width": m.network.width,
                                 "predicted_ms": m.latency.predicted_ms, "measured_ms": measured,
                                 "measured_over_budget": round(measured / budget_ms, 4),
                                 "within_5pct": measured <= budget_ms * TOLERANCE, "upem": m.scores.upem,
                                 "upem_fp32": m.precision.upem_fp32, "target_acc": m.scores.target_acc,
                                 "attempts": len(m.provenance.attempts)})
                    print({k: mine[-1].get(k) for k in ("device", "budget_ms", "mode", "status", "precision",
                                                         "config_id", "measured_ms", "target_acc")}, flush=True)
            rows += mine
            summary.append(summarise(mine, device, floor_fp32, floor_int8, args.bank))
    RESULTS.mkdir(exist_ok=True)
    # every row gets every column: an infeasible deploy has no result columns
    table = [{c: r.get(c, "") for c in COLUMNS} for r in rows]
    write_csv_atomic(RESULTS / f"deploy_precision_sweep{args.tag}.csv", table)
    write_csv_atomic(RESULTS / f"deploy_precision_sweep{args.tag}_summary.csv", summary)
    print_table(summary)


def summarise(rows: list[dict], device: str, floor_fp32: float, floor_int8: float, bank: str) -> dict:
    """Per device: auto − fp32 accuracy where both deployed, budgets met, and where only auto could deploy."""
    by = {(r["budget_ms"], r["mode"]): r for r in rows}
    budgets = sorted({r["budget_ms"] for r in rows})
    both = [b for b in budgets if by[(b, "fp32")]["status"] == by[(b, "auto")]["status"] == "ok"]
    gains = [100 * (by[(b, "auto")]["target_acc"] - by[(b, "fp32")]["target_acc"]) for b in both]
    ok = [r for r in rows if r["status"] == "ok"]
    only_auto = [b for b in budgets if by[(b, "fp32")]["status"] == "infeasible" and by[(b, "auto")]["status"] == "ok"]
    return {
        "device": device, "budgets": len(budgets), "both_deployed": len(both),
        "acc_gain_mean_pts": round(float(np.mean(gains)), 3) if gains else "",
        "acc_gain_min_pts": round(float(np.min(gains)), 3) if gains else "",
        "acc_gain_max_pts": round(float(np.max(gains)), 3) if gains else "",
        "auto_chose_int8": sum(by[(b, "auto")].get("precision") == "int8" for b in budgets),
        "within_5pct_fp32": f"{sum(r['within_5pct'] for r in ok if r['mode'] == 'fp32')}/"
                            f"{sum(r['mode'] == 'fp32' for r in ok)}",
        "within_5pct_auto": f"{sum(r['within_5pct'] for r in ok if r['mode'] == 'auto')}/"
                            f"{sum(r['mode'] == 'auto' for r in ok)}",
        "feasible_only_with_auto": len(only_auto),
        "floor_int8_over_fp32": round(floor_int8 / floor_fp32, 4),
        "one_image_pts": round(100 / 1024, 3), "bank": bank, "machine": platform.node() or "unknown",
    }


if __name__ == "__main__":
    main()
