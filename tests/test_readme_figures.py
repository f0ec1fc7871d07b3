"""The README's benchmark figures are the committed results': each figure it quotes is recomputed here from
``benchmarks/results/*.csv`` and must appear in the README as written (line breaks aside). A rerun that changes
a CSV fails this test until the README says what the new CSV holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def readme() -> str:
    return re.sub(r"\s+", " ", (ROOT / "README.md").read_text())


def pct(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def profiler_agreement() -> str:
    ratios = pd.read_csv(RESULTS / "profiler_agreement.csv")["ratio"]
    return f"ratios {ratios.min():.3f}–{ratios.max():.3f} over {len(ratios)} models"


def deploy_budget_sweep() -> str:
    s = pd.read_csv(RESULTS / "deploy_budget_sweep_summary.csv").set_index("device")
    ort, ov = s.loc["cpu-onnxruntime"], s.loc["cpu-openvino"]
    within = [round(r["within_5pct_share"] * r["deploys"]) for r in (ort, ov)]
    rows = pd.read_csv(RESULTS / "deploy_budget_sweep.csv")
    worst = rows.loc[~rows["within_5pct"], "measured_over_budget"].max()
    return (f"within budget × 1.05 on {within[0]} of {int(ort['deploys'])} deploys on ONNX Runtime and {within[1]} "
            f"of {int(ov['deploys'])} on OpenVINO (the miss, {worst:.2f}× its budget")


def lut_accuracy() -> str:
    rows = pd.read_csv(RESULTS / "lut_accuracy.csv")
    chosen = rows.groupby(["arch", "input", "device"], sort=False).head(1)["within_10pct"]  # the table's own form
    return f"{pct(chosen.min())}–{pct(chosen.max())} % within ±10 % on every case"


def train_regression() -> str:
    rows = pd.read_csv(RESULTS / "train_regression.csv")
    full = rows[rows["width"] == 1.0].groupby(["pair", "method"])["target_acc_pct"].mean()
    parts = [f"{pair} {full[(pair, 'slimda')]:.1f} vs {full[(pair, 'source-only')]:.1f}"
             for pair in dict.fromkeys(rows["pair"])]
    return "full width, bank vs source-only, mean of 2 seeds: " + "; ".join(parts)


FIGURES: dict[str, Callable[[], str]] = {
    "profiler_agreement": profiler_agreement,
    "deploy_budget_sweep": deploy_budget_sweep,
    "lut_accuracy": lut_accuracy,
    "train_regression": train_regression,
}


@pytest.mark.parametrize("name", FIGURES)
def test_readme_quotes_what_the_results_hold(name):
    expected = FIGURES[name]()
    assert expected in readme(), f"README should say (from benchmarks/results): {expected!r}"
