"""Target accuracy without target labels, and with a few.

Every function takes class-probability rows ``[N, K]`` of one network as it will ship (BatchNorm recalibrated
on the target, the deployed head): on unlabelled target images, and on a labelled source validation split that
training never saw. Label-free estimators (each a point estimate of top-1 accuracy on the target):

- ``average_confidence``: the mean top-1 probability on the target.
- ``doc``: difference of confidences (Guillory et al., ICCV 2021): source accuracy minus the drop in mean
  confidence from source to target.
- ``atc``: average thresholded confidence (Garg et al., ICLR 2022): the threshold on a score (max confidence
  or negative entropy, after temperature scaling fitted on the source split) above which as many source images
  lie as the source split has correct ones; the estimate is the share of target images above it.
- ``aline_s``: agreement on the line (Baek et al., NeurIPS 2022) across sub-networks of one bank: where the
  probit of target agreement is linear in the probit of source agreement, target accuracy follows source
  accuracy through the same line; its R² says whether the line holds.

Intervals: ``disagreement_interval`` (|acc(c) − acc(anchor)| ≤ their disagreement, which holds whatever the
shift, around the anchor's estimate), ``wilson`` (a binomial band on a count), and with labels
``ppi_mean`` (prediction-powered inference, Angelopoulos et al., Science 2023: the unlabelled predictions'
mean corrected by the labelled images' residuals, a valid interval whatever the shift). ``pick_to_label``
chooses the images to label, stratified by predicted class and confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SCORES = ("max-confidence", "neg-entropy")


def _rows(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"class probabilities must be a non-empty [N, K] array, got shape {p.shape}")
    return p


def accuracy(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    return float(np.mean(_rows(probs).argmax(1) == np.asarray(labels)))


def average_confidence(target: torch.Tensor | np.ndarray) -> float:
    """Mean top-1 probability on the target."""
    return float(_rows(target).max(1).mean())


def doc(source: torch.Tensor | np.ndarray, source_labels: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray) -> float:
    """Source accuracy minus (mean source confidence − mean target confidence)."""
    return accuracy(source, source_labels) - (average_confidence(source) - average_confidence(target))


def fit_temperature(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """The temperature T minimising the labelled images' negative log-likelihood of softmax(log p / T)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(_rows(probs), 1e-12, 1.0))
    y = np.asarray(labels)

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))

    return float(math.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def tempered(probs: torch.Tensor | np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T)."""
    z = np.log(np.clip(_rows(probs), 1e-12, 1.0)) / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def confidence_score(probs: np.ndarray, score: str) -> np.ndarray:
    """Per image: the top-1 probability, or the negative entropy (higher: more confident)."""
    if score == "max-confidence":
        return probs.max(1)
    if score == "neg-entropy":
        return (probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(1)
    raise ValueError(f"unknown confidence score {score!r}; choose one of {', '.join(SCORES)}")


@dataclass(frozen=True)
class ATC:
    """An ATC estimate and what the device needs to keep computing it: the threshold on the score and the
    temperature the probabilities are scaled by first."""

    estimate: float
    threshold: float
    temperature: float
    score: str
    above: int  # target images above the threshold
    images: int


def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The threshold t with as many source scores above t as the source split has correct images."""
    k = int(np.sum(correct))  # images that must lie above
    ordered = np.sort(scores)[::-1]
    if k == 0:
        return float(ordered[0])  # nothing above the highest score
    if k >= len(ordered):
        return float(np.nextafter(ordered[-1], -np.inf))  # everything above
    return float((ordered[k - 1] + ordered[k]) / 2) if ordered[k - 1] > ordered[k] else float(ordered[k])


def atc(source: torch.Tensor | np.ndarray, source_labels: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray, score: str = "max-confidence", temperature: float | None = None) -> ATC:
    """Average thresholded confidence; ``temperature`` None: fitted on the source split."""
    t = fit_temperature(source, source_labels) if temperature is None else temperature
    src, tgt = tempered(source, t), tempered(target, t)
    correct = src.argmax(1) == np.asarray(source_labels)
    threshold = atc_threshold(confidence_score(src, score), correct)
    above = int(np.sum(confidence_score(tgt, score) > threshold))
    return ATC(above / len(tgt), threshold, t, score, above, len(tgt))


def agreement(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Share of images on which two networks' top-1 classes agree."""
    return float(np.mean(_rows(a).argmax(1) == _rows(b).argmax(1)))


def _probit(x: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(np.clip(x, 1e-4, 1 - 1e-4))


@dataclass(frozen=True)
class Line:
    """probit(target agreement) = slope · probit(source agreement) + intercept, and how well it fits."""

    slope: float
    intercept: float
    r2: float
    pairs: int


def agreement_line(source_agreements: np.ndarray, target_agreements: np.ndarray) -> Line:
    """The least-squares line through the probits of the pairs' agreements (source, target)."""
    x, y = _probit(np.asarray(source_agreements, float)), _probit(np.asarray(target_agreements, float))
    if len(x) < 3 or np.ptp(x) == 0:
        return Line(float("nan"), float("nan"), float("nan"), len(x))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else float("nan")
    return Line(float(slope), float(intercept), r2, len(x))


def aline_s(source_accuracy: float, line: Line) -> float:
    """ALine-S: target accuracy from source accuracy through the agreement line."""
    from scipy.stats import norm

    return float(norm.cdf(line.slope * _probit(np.array([source_accuracy]))[0] + line.intercept))


def disagreement_interval(anchor_estimate: float, disagreement: float) -> tuple[float, float]:
    """Where a candidate's accuracy lies given the anchor's: a candidate that disagrees with the anchor on a
    share d of the images differs from it in accuracy by at most d (any shift, no model)."""
    return max(0.0, anchor_estimate - disagreement), min(1.0, anchor_estimate + disagreement)


def wilson(count: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """Wilson's interval for a binomial share ``count / n``."""
    from scipy.stats import norm

    if n <= 0:
        raise ValueError("a binomial interval needs at least one image")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class LabelledEstimate:
    """An accuracy estimate from a few labels and the unlabelled predictions, with its interval."""

    estimate: float
    low: float
    high: float
    labels: int
    unlabelled: int


def ppi_mean(predicted_unlabelled: np.ndarray, predicted_labelled: np.ndarray, observed: np.ndarray,
             confidence: float = 0.9) -> LabelledEstimate:
    """Prediction-powered mean: the unlabelled images' predicted correctness, corrected by the labelled images'
    residuals (observed − predicted). Its normal interval is valid whatever the predictions' bias, and narrower
    than the labelled mean's wherever the predictions track the truth."""
    from scipy.stats import norm

    f_u = np.asarray(predicted_unlabelled, float)
    f_l, y = np.asarray(predicted_labelled, float), np.asarray(observed, float)
    n, big_n = len(y), len(f_u)
    if n < 2 or big_n < 2 or len(f_l) != n:
        raise ValueError("prediction-powered inference needs at least 2 labelled and 2 unlabelled images")
    rectifier = y - f_l
    estimate = float(f_u.mean() + rectifier.mean())
    z = float(norm.ppf(0.5 + confidence / 2))
    half = z * math.sqrt(f_u.var(ddof=1) / big_n + rectifier.var(ddof=1) / n)
    return LabelledEstimate(estimate, max(0.0, estimate - half), min(1.0, estimate + half), n, big_n)


def pick_to_label(probs: torch.Tensor | np.ndarray, budget: int, seed: int = 0, bins: int = 3) -> list[int]:
    """``budget`` image indices to label, drawn without replacement from strata of (predicted class, confidence
    tercile) in proportion to their sizes (at least one from every stratum while the budget lasts)."""
    p = _rows(probs)
    if not 0 < budget <= len(p):
        raise ValueError(f"a label budget must be between 1 and the {len(p)} target images, got {budget}")
    rng = np.random.default_rng(seed)
    conf = p.max(1)
    edges = np.quantile(conf, np.linspace(0, 1, bins + 1)[1:-1])
    strata: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(p.argmax(1).tolist(), np.searchsorted(edges, conf).tolist())):
        strata.setdefault(key, []).append(i)
    groups = [rng.permutation(members).tolist() for _, members in sorted(strata.items())]
    share = [budget * len(g) / len(p) for g in groups]
    take = [min(len(g), max(1, int(s))) for g, s in zip(groups, share)]
    while sum(take) > budget:  # more strata than the budget: drop from the largest allocations
        take[int(np.argmax(take))] -= 1
    order = sorted(range(len(groups)), key=lambda i: share[i] - int(share[i]), reverse=True)
    while sum(take) < budget:  # the remainder to the largest fractional shares that have images left
        grew = False
        for i in order:
            if sum(take) < budget and take[i] < len(groups[i]):
                take[i] += 1
                grew = True
        if not grew:
            break
    return sorted(i for g, k in zip(groups, take) for i in g[:k])
