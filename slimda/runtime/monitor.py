"""Watching a deployed model's site without labels (``slimda predict --monitor``).

Per window of images: the label-free accuracy estimate computed as deploy computed it (ATC with the manifest's
threshold, temperature and score), its binomial band, the mean confidence and the predicted-class frequencies.
A window raises an alert on either of two tests, each at level ``ALPHA``:

- fewer images above ATC's threshold than at deploy time: Fisher's exact test (one-sided) of the window's
  count against the deploy-time count (``value`` x ``target_images``). Exact because the counts that matter
  are small: with a confident model 1-3 % of images fall below the threshold, and a normal or Wilson band on
  50 images then alarmed in 5 % of quiet windows, not 0.5 % (benchmarks/runtime_overhead.py);
- entropies distributed unlike deploy time's: a χ² test of the window's counts between the deploy-time
  entropy quantiles (``estimated_target_accuracy.target_summary``), neighbouring bins merged until each
  expects at least 5 images, as the χ² approximation needs.

On the site the model was deployed for either fires in about one window in 1000, so an alert means the site
changed or the images did. No torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimda.errors import SlimdaError
from slimda.select.estimate import confidence_score, tempered, wilson

BAND = 0.99  # the band shown around a window's estimate
ALPHA = 0.001  # each test's level
MIN_EXPECTED = 5  # images each χ² bin must expect


@dataclass(frozen=True)
class Window:
    index: int
    first: str
    last: str
    images: int
    estimate: float
    low: float
    high: float
    estimate_p: float
    mean_confidence: float
    entropy_p: float
    top_class: str
    top_class_share: float
    alert: bool
    why: str

    def row(self) -> dict[str, object]:
        return {"window": self.index, "first": self.first, "last": self.last, "images": self.images,
                "estimate": round(self.estimate, 5), "low": round(self.low, 5), "high": round(self.high, 5),
                "estimate_p": float(f"{self.estimate_p:.3g}"), "mean_confidence": round(self.mean_confidence, 5),
                "entropy_p": float(f"{self.entropy_p:.3g}"),
                "top_class": self.top_class, "top_class_share": round(self.top_class_share, 4),
                "alert": self.alert, "why": self.why}


class Monitor:
    """Windows of ``window`` predictions compared with the deployment's deploy-time estimate and summary."""

    def __init__(self, manifest: Mapping[str, object], class_names: list[str], window: int = 200) -> None:
        record = manifest.get("estimated_target_accuracy")
        if not record or "threshold" not in record or "target_summary" not in record:
            raise SlimdaError("--monitor needs the deploy-time estimate of target accuracy, which this deployment "
                              "lacks: deploy with a source split (slimda-train --source-val 0.1, or slimda deploy "
                              "--source-val DATA)")
        if window < 10:
            raise SlimdaError(f"--window must be at least 10 images, got {window}")
        self.record, self.class_names, self.window = record, class_names, window
        summary = record["target_summary"]
        self.edges = np.asarray(summary["entropy_quantiles"], float)
        shares = np.diff([0.0, *summary["quantiles"], 1.0])
        self.expected = shares / shares.sum()
        self.windows: list[Window] = []
        self._files: list[str] = []
        self._probs: list[np.ndarray] = []

    def add(self, path: Path, probs: np.ndarray) -> Window | None:
        """One prediction; the window it completes, if it does."""
        self._files.append(str(path))
        self._probs.append(probs)
        return self._close() if len(self._files) == self.window else None

    def finish(self) -> Window | None:
        """The last, partial window (when it holds at least half a window)."""
        return self._close() if len(self._files) >= self.window // 2 else None

    def _close(self) -> Window:
        probs = tempered(np.stack(self._probs), float(self.record["temperature"]))
        n = len(probs)
        above = int(np.sum(confidence_score(probs, str(self.record["score"])) > float(self.record["threshold"])))
        low, high = wilson(above, n, BAND)
        deployed = float(self.record["value"])
        deployed_n = int(self.record.get("target_images") or 0)
        estimate_p = fisher_lower(above, n, round(deployed * deployed_n), deployed_n) if deployed_n else 1.0
        entropy = -confidence_score(probs, "neg-entropy")
        observed = np.bincount(np.searchsorted(self.edges, entropy, side="right"), minlength=len(self.expected))
        entropy_p = chi2_test(observed, self.expected)
        reasons = []
        if estimate_p < ALPHA:
            reasons.append(f"estimated accuracy {above / n:.1%} ({BAND:.0%} band {low:.1%}-{high:.1%}) is below the "
                           f"deploy-time {deployed:.1%} (Fisher p = {estimate_p:.2g})")
        if entropy_p < ALPHA:
            reasons.append(f"confidence is distributed unlike at deploy time (entropy χ² p = {entropy_p:.2g})")
        classes = np.bincount(probs.argmax(1), minlength=len(self.class_names)) / n
        top = int(classes.argmax())
        window = Window(len(self.windows), self._files[0], self._files[-1], n, above / n, low, high, estimate_p,
                        float(probs.max(1).mean()), entropy_p, self.class_names[top], float(classes[top]),
                        bool(reasons), "; ".join(reasons))
        self.windows.append(window)
        self._files, self._probs = [], []
        return window

    def verdict(self) -> str:
        alerts = [w for w in self.windows if w.alert]
        if not self.windows:
            return f"no window completed (fewer than {self.window // 2} images): nothing to compare"
        if not alerts:
            return f"the site looks like the one the model was deployed for: no alert in {len(self.windows)} windows"
        first = alerts[0]
        return (f"the site has drifted: alerts in {len(alerts)} of {len(self.windows)} windows, first window "
                f"{first.index} ({first.first} .. {first.last}): {first.why}")


def fisher_lower(k: int, n: int, k0: int, n0: int) -> float:
    """Fisher's exact test, one-sided: the chance that a window of ``n`` images drawn from the ``n + n0`` pooled
    ones holds ``k`` or fewer of the ``k + k0`` successes (small when ``k / n`` lies below ``k0 / n0``)."""
    total, successes = n + n0, k + k0
    i = np.arange(max(0, n - (total - successes)), k + 1)
    log_pmf = (_log_choose(successes, i) + _log_choose(total - successes, n - i) - _log_choose(total, n))
    return float(min(1.0, np.exp(log_pmf).sum()))


_lgamma = np.vectorize(math.lgamma, otypes=[float])  # log Γ elementwise, without scipy


def _log_choose(n, k):
    return _lgamma(np.asarray(n) + 1.0) - _lgamma(np.asarray(k) + 1.0) - _lgamma(np.asarray(n) - k + 1.0)


def chi2_test(observed: np.ndarray, expected_shares: np.ndarray) -> float:
    """P-value of observed counts against expected shares, neighbouring bins merged (from the low end) until
    each expects at least ``MIN_EXPECTED`` counts; 1.0 when fewer than two bins are left."""
    n = float(observed.sum())
    counts, expected, merged = [], [], [0.0, 0.0]
    for o, e in zip(observed, expected_shares * n):
        merged = [merged[0] + o, merged[1] + e]
        if merged[1] >= MIN_EXPECTED:
            counts.append(merged[0])
            expected.append(merged[1])
            merged = [0.0, 0.0]
    if merged[1] > 0 and expected:  # a short tail joins the last bin
        counts[-1] += merged[0]
        expected[-1] += merged[1]
    if len(expected) < 2:
        return 1.0
    o, e = np.asarray(counts), np.asarray(expected)
    return chi2_sf(float(np.sum((o - e) ** 2 / e)), len(e) - 1)


def chi2_sf(x: float, df: int) -> float:
    """P(χ²_df > x), exactly for any whole ``df`` (the series of the regularised upper gamma function)."""
    if x <= 0:
        return 1.0
    half = x / 2
    if df % 2 == 0:
        return math.exp(-half) * sum(half ** i / math.factorial(i) for i in range(df // 2))
    tail = math.erfc(math.sqrt(half))
    return tail + math.exp(-half) * sum(half ** (i - 0.5) / math.gamma(i + 0.5) for i in range(1, (df + 1) // 2))
