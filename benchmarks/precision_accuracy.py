"""Does UPEM see what int8 costs a sub-network, and which calibration should deploy use by default?

For ≥ 30 sub-networks of a trained bank (the uniform widths and random ones): each is quantized the way
``slimda deploy`` quantizes an int8 finalist (exported, static QDQ with ONNX Runtime's tools in the device's
activation format, calibrated on target images that never score), then its target accuracy (labels read for
this report only) and UPEM are computed on the scored images for fp32 and for int8. Per calibration setting
(method × image count) the summary gives the accuracy drop (mean, max, at full width), top-1 agreement with
fp32, the Spearman ρ between the accuracy drop and the UPEM increase (targets: ρ ≥ 0.8, full-width drop ≤ 1
point) and the time per quantization; the default setting is the one with the least mean drop, the cheaper
on a tie within 0.05 points.
Writes benchmarks/results/precision_accuracy.csv (one row per sub-network and setting) and
precision_accuracy_summary.csv.

``spearman_disagreement_vs_upem_increase`` ranks the top-1 disagreement with fp32 instead of the accuracy drop
(the drop nets out images that flip both ways). ``--per-tensor`` quantizes weights per tensor: a harsher
setting that deploy never uses, to see whether UPEM ranks damage where there is some to rank.

    slimda quickstart --out /tmp/qs                     # or any trained run
    python benchmarks/precision_accuracy.py --bank /tmp/qs/run
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from slimda.deploy.precision import Int8Settings, QuantizedScorer
from slimda.deploy.setup import BankRun, TargetScoring
from slimda.profilers.devices import get_device
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", default="quickstart-out/run", help="trained run")
    parser.add_argument("--target", default="digits", help="target images (labelled, for the report)")
    parser.add_argument("--device", default="cpu-onnxruntime", help="device whose int8 format is used")
    parser.add_argument("--configs", type=int, default=30, help="sub-networks at least (default: 30)")
    parser.add_argument("--methods", default="minmax,entropy,percentile")
    parser.add_argument("--counts", default="64,256", help="calibration image counts")
    parser.add_argument("--score-images", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-tensor", action="store_true",
                        help="weights per tensor, not per channel: a harsher quantization, to see whether UPEM "
                             "ranks damage where there is some")
    parser.add_argument("--tag", default="", help="suffix of the CSV names")
    args = parser.parse_args()

    run = BankRun.open(args.bank)
    bank = run.bank
    scorer = run.scorer(TargetScoring(args.target, calibration_images=512, score_images=args.score_images,
                                      seed=args.seed))
    if scorer.target.labels is None:
        raise SystemExit(f"{args.target} has no labels: this benchmark reports accuracy")
    device = get_device(args.device)
    space = bank.space
    configs = list(dict.fromkeys([space.smallest(), *(space.uniform(r) for r in space.ratios), space.largest()]))
    configs += space.sample_many(max(args.configs - len(configs), 0), args.seed, exclude=configs)
    shape = (1, *run.meta.input_chw)
    rows, summary = [], []
    for method in args.methods.split(","):
        for count in (int(c) for c in args.counts.split(",")):
            quantized = QuantizedScorer(scorer, Int8Settings(method, count, per_channel=not args.per_tensor,
                                                                seed=args.seed))
            mine = []
            for i, config in enumerate(configs):
                t0 = time.perf_counter()
                c = quantized.candidate(config, device.int8_activations, shape, device.default_opset, None)
                seconds = time.perf_counter() - t0
                fp32 = scorer.score(config)
                mine.append({
                    "method": method, "images": count, "config_id": config.id,
                    "width": round(space.ratio_of(config), 4), "acc_fp32": round(fp32.target_acc, 5),
                    "acc_int8": round(c.target_acc, 5), "drop_pts": round(100 * (fp32.target_acc - c.target_acc), 3),
                    "upem_fp32": round(fp32.upem, 6), "upem_int8": round(c.upem, 6),
                    "upem_increase": round(c.upem - fp32.upem, 6), "agreement": round(c.agreement, 5),
                    "quantize_seconds": round(seconds, 3), "full_width": config == space.largest(),
                    "activations": device.int8_activations})
                print(f"{method} {count} {i + 1}/{len(configs)} {config.id}: drop {mine[-1]['drop_pts']} pts, "
                      f"upem +{mine[-1]['upem_increase']:.4g}", flush=True)
            rows += mine
            drop = np.array([r["drop_pts"] for r in mine])
            increase = np.array([r["upem_increase"] for r in mine])
            rho = spearmanr(drop, increase).statistic if np.ptp(drop) > 0 and np.ptp(increase) > 0 else float("nan")
            summary.append({
                "method": method, "images": count, "configs": len(mine), "drop_mean_pts": round(drop.mean(), 3),
                "drop_max_pts": round(drop.max(), 3),
                "drop_full_width_pts": next(r["drop_pts"] for r in mine if r["full_width"]),
                "agreement_mean": round(float(np.mean([r["agreement"] for r in mine])), 4),
                "agreement_min": round(float(np.min([r["agreement"] for r in mine])), 4),
                "spearman_drop_vs_upem_increase": round(float(rho), 4),
                "acc_spread_fp32_pts": round(100 * float(np.ptp([r["acc_fp32"] for r in mine])), 3),
                "quantize_seconds_mean": round(float(np.mean([r["quantize_seconds"] for r in mine])), 3),
                "spearman_disagreement_vs_upem_increase": round(float(spearmanr(
                    [1 - r["agreement"] for r in mine], increase).statistic), 4),
                "per_channel": not args.per_tensor,
                "bank": str(args.bank), "target": args.target, "device_format": device.int8_activations,
                "machine": platform.node() or "unknown"})
    best = min(summary, key=lambda s: s["drop_mean_pts"])
    cheapest = min((s for s in summary if s["drop_mean_pts"] <= best["drop_mean_pts"] + 0.05),
                   key=lambda s: s["quantize_seconds_mean"] * s["images"])
    for s in summary:
        s["default"] = s is cheapest
    RESULTS.mkdir(exist_ok=True)
    write_csv_atomic(RESULTS / f"precision_accuracy{args.tag}.csv", rows)
    write_csv_atomic(RESULTS / f"precision_accuracy{args.tag}_summary.csv", summary)
    print_table(summary)
    print(f"default: {cheapest['method']} on {cheapest['images']} images")


if __name__ == "__main__":
    main()
