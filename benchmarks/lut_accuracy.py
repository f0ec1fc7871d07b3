"""How well a latency lookup table predicts held-out sub-networks, per architecture and CPU runtime.

For each (arch, resolution) × device: build the table from scratch (timed), then measure ``--validate``
held-out random configurations end to end (seed distinct from the fit set; median of ``--rounds``
interleaved rounds) and compare: share within ±10 %, RMSE, Spearman ρ, mean/max |error|. Each build is
scored twice, with the correction it chose (``auto``) and with the plain ``a·Σ blocks + b``, on the same
measurements. The noise floor: ``repeatability_pct``, the share of validation networks whose every round
lies within ±10 % of their median (``build_repeatable_pct``: the same for the table's own whole networks);
``within_10pct_repeatable_only`` scores only the networks that repeat that closely (the predictor's own
error where the measurement allows ±10 % at all); ``drift_since_build_pct``: the uniform-width networks
re-timed during validation against their table entries (how far the machine moved since the build).
Tables are timed paired with their reference network (the default of ``slimda-profile``; ``--unpaired``
times every entry alone): "measured" is then each held-out network's ratio to the reference × the table's
reference latency, and ``within_10pct_raw`` scores the same predictions against the raw medians.
Writes benchmarks/results/lut_accuracy.csv (``--name``; one row per table and correction).

    python benchmarks/lut_accuracy.py                       # 5 cases × ORT, OpenVINO (about 90 min here)
    python benchmarks/lut_accuracy.py --cases digits-cnn:28 --devices cpu-onnxruntime --validate 10
    python benchmarks/lut_accuracy.py --cases digits-cnn:28:3 --precision int8 --name lut_accuracy_int8

A case is ARCH:RESOLUTION[:CHANNELS] (default channels: the architecture's); ``--precision int8`` builds int8
tables (every entry quantized as deployed) and validates them on quantized networks.

``--keep DIR`` keeps every table, its validation timings and the run's settings (``*-run.json``);
``--rescore DIR`` scores kept tables again with the current prediction code (group regression, correction)
without timing anything: the timings of a run are what change with the machine, the predictor is not.

    python benchmarks/lut_accuracy.py --keep /tmp/lut          # time once
    python benchmarks/lut_accuracy.py --rescore /tmp/lut       # after changing slimda/latency/fit.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from slimda.latency.build import build_table, default_in_channels
from slimda.latency.noise import RoundNoise
from slimda.latency.table import LatencyTable, read_rows
from slimda.latency.validate import ValidationReport, accuracy, validate_table
from slimda.model.bank import ModelBank
from slimda.profilers.measurement import MeasureOptions
from slimda.tables import print_table, write_csv_atomic, write_json_atomic

RESULTS = Path(__file__).parent / "results"
TARGET_WITHIN_10 = 0.90


def score(table, report, correction: str) -> dict[str, object]:
    """Accuracy of ``table`` with ``correction`` (auto: the table's own) on the validation measurements;
    ``within_10pct_drift_removed`` rescales the predictions by the measured drift of the uniform networks
    (the predictor's own error, without the machine's change of speed since the build); on a paired table
    the measurements are already on the table's scale, so it equals ``within_10pct``."""
    if correction != "auto":
        table = _with_correction(table, correction)
    good = [r for r in report.rows if r["status"] == "ok"]
    measured = [float(r["measured_ms"]) for r in good]
    predicted = [table.predict(table.config(str(r["config_id"]))) for r in good]
    within, rmse, rho = accuracy(predicted, measured)
    within_raw = accuracy(predicted, [float(r["measured_raw_ms"]) for r in good])[0]
    # a paired validation is already on the table's scale: rescaling by the drift would count it twice
    within_steady = within if report.paired else accuracy([p * report.drift for p in predicted], measured)[0]
    steady = [_repeats(r) for r in good]
    within_repeatable = accuracy([p for p, keep in zip(predicted, steady) if keep],
                                 [m for m, keep in zip(measured, steady) if keep])[0]
    errors = np.abs(np.asarray(predicted) / np.asarray(measured) - 1) * 100
    return {"correction": table.correction.terms, "coef_a": round(table.correction.a, 4),
            "coef_b_ms": round(table.correction.b, 4), "coef_c_ms_per_mb": round(table.correction.c, 5),
            "coef_d_ms_per_mb_spilled": round(table.correction.d, 5),
            "spill_knee_mb": round(table.correction.knee_mb, 3),
            "validate_n": len(good), "within_10pct": round(100 * within, 1), "rmse_ms": round(rmse, 4),
            "within_10pct_raw": round(100 * within_raw, 1),
            "within_10pct_drift_removed": round(100 * within_steady, 1),
            "repeatable_n": sum(steady), "within_10pct_repeatable_only": round(100 * within_repeatable, 1),
            "spearman_rho": round(rho, 3), "mean_abs_err_pct": round(float(errors.mean()), 2),
            "max_abs_err_pct": round(float(errors.max()), 2),
            "measured_ms_median": round(float(np.median(measured)), 4),
            "target_met": within >= TARGET_WITHIN_10}


def _repeats(row) -> bool:
    """Whether every round of a validation network lies within ±10 % of its median (its noise allows ±10 %)."""
    return RoundNoise.repeats([float(v) for v in str(row["round_ms"]).split()])


def _with_correction(table, terms: str):
    from copy import copy

    other = copy(table)
    other.correction = table.fit_correction(terms)
    return other


def kept_scores(folder: Path) -> list[dict[str, object]]:
    """Score every table kept in ``folder`` (with its validation CSV) again with the current code: the
    table's stored correction is dropped and refitted, held-out networks are predicted anew."""
    rows = []
    for path in sorted(folder.glob("*.csv")):
        validation = path.with_name(f"{path.stem}-validation.csv")
        if path.stem.endswith("-validation") or not validation.exists():
            continue
        timed, _ = read_rows(path)
        table = LatencyTable([r for r in timed if r["entry_kind"] != "correction"])
        with validation.open(newline="") as f:
            measured = list(csv.DictReader(f))
        report = ValidationReport(measured, float("nan"), float("nan"), float("nan"), len(measured),
                                  sum(1 for r in measured if r["fallback_blocks"] not in ("", "0")),
                                  float("nan"), float("nan"), float("nan"), paired=bool(table.reference_id))
        run = path.with_name(f"{path.stem}-run.json")
        base = json.loads(run.read_text()) if run.exists() else {
            "arch": table.arch, "input": "x".join(map(str, table.input_shape)), "device": table.device,
            "precision": table.precision}
        base.update(block_keys=len(table.block_ms), table_rows=len(table.rows), rescored=True)
        for correction in ("auto", "sum"):
            rows.append({**base, **score(table, report, correction)})
        print(f"{path.name}: {rows[-2]['within_10pct']} % within ±10 % ({rows[-2]['correction']}), "
              f"{rows[-1]['within_10pct']} % (sum)", file=sys.stderr)
    if not rows:
        raise SystemExit(f"no kept tables with a -validation.csv beside them in {folder}")
    return rows


def summary_table(rows) -> None:
    print_table([{k: r.get(k, "") for k in ("arch", "input", "device", "precision", "correction", "within_10pct",
                                            "within_10pct_raw", "rmse_ms", "spearman_rho", "mean_abs_err_pct",
                                            "build_s", "repeatability_pct", "within_10pct_repeatable_only")}
                 for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+",
                        default=["digits-cnn:28", "digits-cnn:28:3", "digits-cnn:32:3", "resnet18:64", "resnet18:96"],
                        help="ARCH:RESOLUTION[:CHANNELS] (default: digits-cnn 28² with 1 and 3 channels and 32² "
                             "with 3, resnet18 64² and 96²)")
    parser.add_argument("--precision", default=None, help="table precision (default: each device's own)")
    parser.add_argument("--devices", nargs="+", default=["cpu-onnxruntime", "cpu-openvino"])
    parser.add_argument("--validate", type=int, default=30)
    parser.add_argument("--fit-configs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of every whole network, in the build and in validation (median kept)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds timed per entry")
    parser.add_argument("--name", default="lut_accuracy", help="CSV name in benchmarks/results (default: lut_accuracy)")
    parser.add_argument("--keep", type=Path, help="keep the tables and validation CSVs in this folder")
    parser.add_argument("--unpaired", action="store_true", help="time every entry alone (no reference network)")
    parser.add_argument("--rescore", type=Path, metavar="DIR",
                        help="score the tables a --keep run left in DIR again with the current code; times nothing")
    args = parser.parse_args()
    results = RESULTS / f"{args.name}.csv"
    if args.rescore:
        rows = kept_scores(args.rescore)
        write_csv_atomic(results, rows)
        summary_table(rows)
        print(f"wrote {results}")
        return
    options = MeasureOptions(threads=args.threads, precision=args.precision, warmup=5, min_runs=20,
                             min_time_s=args.min_time)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        for case in args.cases:
            arch, size, *rest = case.split(":")
            res = (int(size), int(size))
            channels = int(rest[0]) if rest else default_in_channels(arch)
            for device in args.devices:
                bank = ModelBank(arch, 10, channels).eval()
                tag = f"-{args.precision}" if args.precision else ""
                out = folder / f"{arch}-{size}x{channels}{tag}-{device}.csv"
                out.unlink(missing_ok=True)
                load_start = os.getloadavg()[0]
                started = time.perf_counter()
                table = build_table(bank, device, replace(options, resolution=res), out,
                                    fit_configs=args.fit_configs, whole_rounds=args.rounds, paired=not args.unpaired)
                build_s = time.perf_counter() - started
                report = validate_table(table, bank, device, options, args.validate,
                                        folder / f"{out.stem}-validation.csv", rounds=args.rounds)
                print(f"{arch} {size} {device}: {report.text()}", file=sys.stderr)
                base = {"arch": arch, "input": "x".join(map(str, table.input_shape)), "device": device,
                        "precision": table.precision,
                        "runtime_version": table.rows[0]["runtime_version"], "threads": args.threads,
                        "fit_configs": args.fit_configs, "block_keys": len(table.block_ms),
                        "table_rows": len(table.rows), "build_s": round(build_s, 1),
                        "fallback_configs": report.with_fallback, "paired": report.paired,
                        "rounds": args.rounds, "build_repeatable_pct": round(100 * table.noise.repeatable, 1),
                        "build_round_spread_pct": round(100 * table.noise.spread, 1),
                        "repeatability_pct": round(100 * report.repeatable, 1),
                        "drift_since_build_pct": round(100 * (report.drift - 1), 1)}
                base.update(machine=platform.node(), cpu_count=os.cpu_count(),
                            loadavg_1min=f"{load_start:.2f}->{os.getloadavg()[0]:.2f}")
                if args.keep:
                    write_json_atomic(folder / f"{out.stem}-run.json", base)
                for correction in ("auto", "sum"):
                    rows.append({**base, **score(table, report, correction)})
                write_csv_atomic(results, rows)  # partial results survive an interruption
    summary_table(rows)
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
