"""Training regression guard: target accuracy per width on fixed short runs, against the committed baseline.

Run it for every change to training, data or preprocessing. It trains short, fixed runs (same steps, seeds
and options every time) on domain pairs given as folders and built in, for the SlimDA bank and for a
source-only bank, and reads target accuracy per uniform width from each run's eval.csv (the test head,
BatchNorm recalibrated on target; target labels are read for scoring only):

- ``digits-folders``: mnist -> digits as 28x28 grey PNG folders (the built-in pair through the folder path);
- ``digits-grey2colour``: mnist-a -> mnist-b-photo, grey MNIST digits to the other half of MNIST over photo
  crops (colour; ``slimda.data.sample_domains.make_digit_domains``), the case of issue 21;
- ``digits-builtin``: the built-in mnist -> digits;
- ``photos``: the sample-photo pair (``make_photo_domains``, 2 classes, 60 photos each) at 32x32.

Each run is a ``slimda train`` subprocess with one thread (``--jobs`` run side by side). ``--code DIR`` runs
another checkout of slimda (for example an older commit from ``git worktree add``) with the same options, to
compare code against code, or to keep a long run on one commit while the working tree changes (a checkout
needs ``slimda/profilers`` and ``slimda/export`` linked to its top-level folders, as the wheel maps them). A
checkout without ``--threads`` gets one thread through ``OMP_NUM_THREADS``; ``--extra`` options it lacks are refused.

Writes ``benchmarks/results/train_regression_<tag>.csv`` (one row per pair, method, seed, width) and prints,
per (pair, method, width), the mean over seeds next to the committed baseline
(``benchmarks/results/train_regression.csv``), flagging every change beyond noise: a difference of the means
larger than both ``--min-change`` points and twice its standard error from the seeds' spread. It then checks
the targets: on every pair the bank's full width is at least source-only's + 2 points. ``--update-baseline``
makes this run the committed baseline.

    python benchmarks/train_regression.py                          # about 70 min on 2 cores
    python benchmarks/train_regression.py --code /tmp/old --tag before_photos --pairs digits-grey2colour
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BASELINE = RESULTS / "train_regression.csv"
REPO = Path(__file__).resolve().parent.parent

# pair -> (source, target, extra options); folders are made under --data by ensure_data
PAIRS: dict[str, tuple[str, str, list[str]]] = {
    "digits-folders": ("{data}/digits/mnist", "{data}/digits/digits", []),
    "digits-grey2colour": ("{data}/digits/mnist-a", "{data}/digits/mnist-b-photo", []),
    "digits-builtin": ("mnist", "digits", []),
    "photos": ("{data}/photos/source", "{data}/photos/target", ["--resolution", "32"]),
}
METHODS: dict[str, list[str]] = {
    "slimda": [],  # the default bank: DANN + SEED + OSTC
    "source-only": ["--objective", "source-only", "--no-seed"],
}
# options only newer code knows: --threads is left out for a checkout without it, the others refused in --extra
NEWER_OPTIONS = ("--threads", "--workers", "--preprocess", "--print-every")
TARGET_GAIN_PTS = 2.0


def ensure_data(root: Path) -> None:
    """The folder domains the pairs read, made once (they are a pure function of their seeds)."""
    from slimda.data.sample_domains import make_digit_domains, make_photo_domains

    make_digit_domains(root / "digits")
    if not (root / "photos" / "target").is_dir():
        part = root / "photos.partial"
        shutil.rmtree(part, ignore_errors=True)
        make_photo_domains(part, per_class=60)
        part.rename(root / "photos")


def known_options(code: Path | None) -> set[str]:
    """The NEWER_OPTIONS the checkout's ``slimda train --help`` lists."""
    env = dict(os.environ, PYTHONPATH=str(code)) if code else None
    text = subprocess.run([sys.executable, "-m", "slimda.cli", "train", "--help"], capture_output=True, text=True,
                          env=env, cwd=code or REPO, timeout=300).stdout
    return {opt for opt in NEWER_OPTIONS if opt in text}


def run_one(pair: str, method: str, seed: int, args: argparse.Namespace, known: set[str], work: Path) -> list[dict]:
    source, target, extra = PAIRS[pair]
    out = work / f"{pair}-{method}-{seed}"
    options = ["--source", source.format(data=args.data), "--target", target.format(data=args.data),
               "--iters", str(args.iters), "--seed", str(seed), "--out", str(out), "--force",
               *extra, *METHODS[method], *args.extra]
    options += ["--threads", "1"] if "--threads" in known else []  # older code: OMP_NUM_THREADS below
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if args.code:
        env["PYTHONPATH"] = str(args.code)
    started = time.perf_counter()
    # run from the checkout: ``python -m`` puts the working folder first on sys.path, before PYTHONPATH
    done = subprocess.run([sys.executable, "-m", "slimda.cli", "train", *options], capture_output=True, text=True,
                          env=env, cwd=args.code or REPO, timeout=4 * 3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{pair}/{method}/seed {seed} failed:\n{done.stderr[-2000:]}")
    config = json.loads((out / "config.json").read_text())
    rows = []
    with open(out / "eval.csv") as f:
        for row in csv.DictReader(f):
            if not row["config"].startswith("uniform-") or row["head"] != config.get("test_head", "ca"):
                continue
            rows.append({"pair": pair, "method": method, "seed": seed, "width": float(row["config"][8:]),
                         "target_acc_pct": round(100 * float(row["target_acc"]), 2), "iters": args.iters,
                         "preprocess_used": config.get("preprocess_used", ""),
                         "resize": (config.get("preprocessing") or {}).get("resize"),
                         "augment_used": config.get("augment_used", ""), "train_seconds": round(seconds, 1),
                         "extra": " ".join(args.extra), "code": args.code_label, "machine": platform.node()})
    print(f"  {pair:20s} {method:12s} seed {seed}: full width {rows[-1]['target_acc_pct']:.2f} % "
          f"({seconds:.0f} s)", flush=True)
    return rows


def summarise(rows: list[dict]) -> dict[tuple, tuple[float, float, int]]:
    """(pair, method, width) -> (mean, std over seeds, seeds)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["pair"], r["method"], float(r["width"]))].append(float(r["target_acc_pct"]))
    return {key: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float("nan"), len(v))
            for key, v in groups.items()}


def compare(new: dict, base: dict, min_change: float) -> list[str]:
    """Lines for every (pair, method, width), the changes beyond noise marked."""
    lines = []
    for key in sorted(new):
        mean, std, n = new[key]
        line = f"{key[0]:20s} {key[1]:12s} w={key[2]:<5} {mean:6.2f} ± {std:4.2f} (n={n})"
        if key in base:
            b_mean, b_std, b_n = base[key]
            se = math.sqrt((std ** 2 if n > 1 else 0) / n + (b_std ** 2 if b_n > 1 else 0) / b_n)
            delta = mean - b_mean
            beyond = abs(delta) > max(min_change, 2 * se)
            line += f"   baseline {b_mean:6.2f} ± {b_std:4.2f}   Δ {delta:+6.2f}" + ("   CHANGED" if beyond else "")
        lines.append(line)
    return lines


def check_targets(summary: dict) -> list[str]:
    lines = []
    for pair in sorted({k[0] for k in summary}):
        bank, alone = summary.get((pair, "slimda", 1.0)), summary.get((pair, "source-only", 1.0))
        if bank and alone:
            gain = bank[0] - alone[0]
            verdict = "ok" if gain >= TARGET_GAIN_PTS else "MISSED"
            if verdict == "MISSED" and alone[0] > 100 - TARGET_GAIN_PTS:
                verdict = f"at the ceiling: source-only is within {TARGET_GAIN_PTS:.0f} points of 100 %"
            lines.append(f"{pair:20s} bank {bank[0]:6.2f} vs source-only {alone[0]:6.2f}: "
                         f"{gain:+.2f} points (target +{TARGET_GAIN_PTS:.0f}) {verdict}")
    return lines


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, from {', '.join(PAIRS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="0,1", help="seeds per pair and method (default 0,1)")
    parser.add_argument("--iters", type=int, default=1000, help="training steps per run (default 1000)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each (default 2)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "slimda-train-regression",
                        help="where the folder domains are written once")
    parser.add_argument("--code", type=Path, help="another slimda checkout to run instead of this one")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="more slimda train options for every run (last on the line)")
    parser.add_argument("--tag", default="latest", help="output: results/train_regression_TAG.csv")
    parser.add_argument("--min-change", type=float, default=1.0, help="smallest change reported, points")
    parser.add_argument("--update-baseline", action="store_true", help=f"write this run to {BASELINE.name}")
    args = parser.parse_args()
    args.code = args.code.resolve() if args.code else None
    args.code_label = subprocess.run(["git", "-C", str(args.code or REPO), "describe", "--always", "--dirty"],
                                     capture_output=True, text=True).stdout.strip() or str(args.code or REPO)
    pairs, methods = args.pairs.split(","), args.methods.split(",")
    unknown = [p for p in pairs if p not in PAIRS] + [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown pairs/methods {unknown}: pairs are {list(PAIRS)}, methods {list(METHODS)}")
    ensure_data(args.data)
    known = known_options(args.code)
    unknown_extra = [opt for opt in args.extra if opt in NEWER_OPTIONS and opt not in known]
    if unknown_extra:
        raise SystemExit(f"{args.code} does not know {unknown_extra}: leave those out of --extra")
    jobs = [(p, m, int(s)) for p in pairs for m in methods for s in args.seeds.split(",")]
    print(f"{len(jobs)} runs of {args.iters} steps, {args.jobs} at a time ({args.code_label})", flush=True)
    with tempfile.TemporaryDirectory(prefix="train-regression-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = [r for rs in pool.map(lambda j: run_one(*j, args, known, Path(tmp)), jobs) for r in rs]

    from slimda.tables import write_csv_atomic

    out = RESULTS / f"train_regression_{args.tag}.csv"
    write_csv_atomic(out, rows)
    print(f"wrote {out}")
    summary = summarise(rows)
    base = summarise(read_csv(BASELINE)) if BASELINE.exists() else {}
    print(f"\ntarget accuracy %, mean ± std over seeds; baseline: {BASELINE.name if base else 'none yet'}")
    print("\n".join(compare(summary, base, args.min_change)))
    print("\ntargets:")
    print("\n".join(check_targets(summary)))
    if args.update_baseline:
        write_csv_atomic(BASELINE, rows)
        print(f"wrote {BASELINE}")


if __name__ == "__main__":
    main()
