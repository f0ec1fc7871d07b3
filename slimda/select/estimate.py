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
  accuracy through the same line; its R² says whether the line holds. ``aline_d`` solves every network's
  target accuracy from all pairs at once.

``target_accuracy`` is the estimate slimda reports: ATC with its interval and a verdict (``judge``) from
label-free signals under which benchmarks/accuracy_estimation.py saw every estimator fail.

Intervals: ``disagreement_interval`` (|acc(c) − acc(anchor)| ≤ their disagreement, which holds whatever the
shift, around the anchor's estimate), ``wilson`` (a binomial band on a count), and with labels
``ppi_mean`` (prediction-powered inference, Angelopoulos et al., Science 2023: the unlabelled predictions'
mean corrected by the labelled images' residuals, a valid interval whatever the shift). ``pick_to_label``
chooses the images to label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tensors are accepted, but importing this module needs no torch (slimda.runtime reads it)
    import torch

SCORES = ("max-confidence", "neg-entropy")


def _rows(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    p = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs, dtype=np.float64)
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


def aline_d(source_accuracies: np.ndarray, source_agreements: np.ndarray, target_agreements: np.ndarray,
            pairs: np.ndarray, line: Line) -> np.ndarray:
    """ALine-D: every network's target accuracy at once, from all pairs (i, j) of networks. Where accuracy and
    agreement share one line (slope a), ½(Φ⁻¹acc_T,i + Φ⁻¹acc_T,j) = Φ⁻¹agr_T,ij + a·(½(Φ⁻¹acc_S,i +
    Φ⁻¹acc_S,j) − Φ⁻¹agr_S,ij) for every pair; least squares over the pairs gives Φ⁻¹acc_T."""
    from scipy.stats import norm

    pairs = np.asarray(pairs, int)
    acc_s = _probit(np.asarray(source_accuracies, float))
    rhs = _probit(np.asarray(target_agreements, float)) + line.slope * (
        0.5 * (acc_s[pairs[:, 0]] + acc_s[pairs[:, 1]]) - _probit(np.asarray(source_agreements, float)))
    design = np.zeros((len(pairs), len(acc_s)))
    design[np.arange(len(pairs)), pairs[:, 0]] += 0.5
    design[np.arange(len(pairs)), pairs[:, 1]] += 0.5
    solution, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    return norm.cdf(solution)


def disagreement_interval(anchor_estimate: float, disagreement: float) -> tuple[float, float]:
    """Where a candidate's accuracy lies given the anchor's: a candidate that disagrees with the anchor on a
    share d of the images differs from it in accuracy by at most d (any shift, no model)."""
    return max(0.0, anchor_estimate - disagreement), min(1.0, anchor_estimate + disagreement)


def wilson(count: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """Wilson's interval for a binomial share ``count / n``."""
    if n <= 0:
        raise ValueError("a binomial interval needs at least one image")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at 0 or n the band's end is 0 or 1 exactly (rounding would leave it a hair inside and miss the truth)
    return 0.0 if count == 0 else max(0.0, centre - half), 1.0 if count == n else min(1.0, centre + half)


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
    than the labelled mean's wherever the predictions track the truth (and hardly wider where they do not: the
    predictions are weighted by a power-tuning λ in [0, 1] fitted on the labelled images). As Agresti and Coull
    add z²/2 successes and failures to a binomial count, the residuals' mean and variance take z²/2 pseudo-images
    right and z²/2 wrong at the mean prediction: without them the interval covered 85-86 % on 50-100 labels of an
    accurate network (whose few errors make the residuals skewed; benchmarks/accuracy_estimation.py)."""
    f_u = np.asarray(predicted_unlabelled, float)
    f_l, y = np.asarray(predicted_labelled, float), np.asarray(observed, float)
    n, big_n = len(y), len(f_u)
    if n < 2 or big_n < 2 or len(f_l) != n:
        raise ValueError("prediction-powered inference needs at least 2 labelled and 2 unlabelled images")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    # power tuning (PPI++, Angelopoulos et al. 2023): predictions weighted by how far they track the labels, so
    # that predictions that do not track them (λ = 0) leave the labels' own interval
    spread_f = float(np.var(np.concatenate([f_u, f_l]), ddof=1))
    tuned = float(np.cov(y, f_l)[0, 1]) / ((1 + n / big_n) * spread_f) if spread_f > 0 and n > 2 else 0.0
    tuned = min(1.0, max(0.0, tuned)) if math.isfinite(tuned) else 0.0
    mean_f = tuned * f_u.mean()
    rectifier = np.concatenate([y - tuned * f_l, [1 - mean_f, -mean_f]])
    weights = np.concatenate([np.ones(n), [z * z / 2] * 2])
    total = weights.sum()
    shift = float(np.sum(weights * rectifier) / total)
    spread = float(np.sum(weights * (rectifier - shift) ** 2) / (total - 1))
    estimate = float(mean_f + shift)
    half = z * math.sqrt(tuned ** 2 * f_u.var(ddof=1) / big_n + spread / total)
    return LabelledEstimate(estimate, max(0.0, estimate - half), min(1.0, estimate + half), n, big_n)


def pick_to_label(probs: torch.Tensor | np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """``budget`` image indices to label: a simple random sample, the design ``ppi_mean``'s interval assumes.
    (Picking spread over predicted classes and confidence, with that interval, covered 80 % instead of 90 % in
    benchmarks/accuracy_estimation.py: the spread already takes the predictions' share of the variance, which
    the interval then takes a second time.)"""
    p = _rows(probs)
    if not 0 < budget <= len(p):
        raise ValueError(f"a label budget must be between 1 and the {len(p)} target images, got {budget}")
    return sorted(np.random.default_rng(seed).choice(len(p), budget, replace=False).tolist())

# ----------------------------------------------------------------------------------- the default estimate

# ATC's score: negative entropy, the lower error on the one bank of benchmarks/accuracy_estimation.py whose estimates
# the verdict trusts (MAE 1.8 points against 2.5 for max confidence); on the others neither is usable
DEFAULT_SCORE = "neg-entropy"
DEFAULT_ESTIMATOR = "atc-mc" if DEFAULT_SCORE == "max-confidence" else "atc-ne"
# the estimator's error beyond sampling, added to both ends of Wilson's band on ATC's count: 3 points covered 97 %
# of the sub-networks of the bank the verdict trusted (2 points: 84 %); set on that one bank, so provisional
MARGIN = 0.03
# the verdict's thresholds (``judge``), set by benchmarks/accuracy_estimation.py: the least drop in mean tempered
# confidence from the source split to the target, and the most total variation between the target's predicted
# class frequencies and the source split's class frequencies, for an estimate to be trusted
CONFIDENCE_GAP = 0.0
CLASS_TV = 0.05
ATC_SCORE_GAP = 0.04  # and the most ATC on max confidence and on negative entropy may differ
MIN_TARGET_IMAGES = 100  # below these, an interval is wider than any decision it could inform
MIN_SOURCE_IMAGES = 50


ESTIMATE_COLUMNS = ("est_acc", "est_acc_low", "est_acc_high", "est_verdict")


@dataclass(frozen=True)
class Estimate:
    """A network's estimated target accuracy, its interval, whether to trust it (and why), and what the
    device needs to keep estimating (the ATC threshold and temperature)."""

    estimate: float
    low: float
    high: float
    estimator: str
    verdict: str  # "reliable" or "unreliable"
    why: str
    threshold: float
    temperature: float
    score: str
    target_images: int
    source_images: int
    signals: dict
    target_summary: dict  # the target's tempered confidence and entropy, and predicted-class frequencies

    @property
    def reliable(self) -> bool:
        return self.verdict == "reliable"

    def text(self) -> str:
        return estimate_text(self.to_dict())

    def columns(self) -> dict[str, object]:
        """A report row's columns: the estimate, its interval and verdict (``ESTIMATE_COLUMNS``)."""
        return {"est_acc": round(self.estimate, 5), "est_acc_low": round(self.low, 5),
                "est_acc_high": round(self.high, 5), "est_verdict": self.verdict}

    def to_dict(self) -> dict:
        return {"value": round(self.estimate, 5), "low": round(self.low, 5), "high": round(self.high, 5),
                "estimator": self.estimator, "verdict": self.verdict, "why": self.why,
                "threshold": self.threshold, "temperature": self.temperature, "score": self.score,
                "target_images": self.target_images, "source_images": self.source_images,
                "signals": {k: round(float(v), 5) for k, v in self.signals.items()},
                "target_summary": self.target_summary}


def estimate_text(record: dict | None) -> str:
    """An estimate (``Estimate.to_dict``, as manifests hold it) for a table: "91.2% (88.1-93.4)", "unreliable"
    (never a confident number that is not one), or "-" when there is none."""
    if record is None:
        return "-"
    if record.get("verdict") != "reliable":
        return "unreliable"
    return f"{100 * record['value']:.1f}% ({100 * record['low']:.1f}-{100 * record['high']:.1f})"


def class_frequencies(classes: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(classes, int), minlength=num_classes) / max(1, len(classes))


def target_accuracy(source: torch.Tensor | np.ndarray, source_labels: torch.Tensor | np.ndarray,
                    target: torch.Tensor | np.ndarray, anchor_source: np.ndarray | None = None,
                    anchor_target: np.ndarray | None = None, confidence: float = 0.9) -> Estimate:
    """The default label-free estimate of one network, with its interval and verdict; ``anchor_*`` are the
    largest network's softmax (for the disagreement signals), when there is one."""
    src, tgt, ys = _rows(source), _rows(target), np.asarray(source_labels)
    found = atc(src, ys, tgt, DEFAULT_SCORE)
    other = atc(src, ys, tgt, SCORES[1 - SCORES.index(DEFAULT_SCORE)], found.temperature)
    low, high = wilson(found.above, found.images, confidence)
    low, high = max(0.0, low - MARGIN), min(1.0, high + MARGIN)
    k = src.shape[1]
    tv = 0.5 * float(np.abs(class_frequencies(tgt.argmax(1), k) - class_frequencies(ys, k)).sum())
    signals = {"source_acc": accuracy(src, ys), "source_conf": average_confidence(tempered(src, found.temperature)),
               "target_conf": average_confidence(tempered(tgt, found.temperature)), "class_tv": tv,
               "doc": doc(src, ys, tgt), "atc_score_gap": abs(found.estimate - other.estimate)}
    if anchor_source is not None and anchor_target is not None:
        signals["disagree_source"] = 1 - agreement(src, anchor_source)
        signals["disagree_target"] = 1 - agreement(tgt, anchor_target)
    verdict, why = judge(signals)
    if verdict != "reliable":  # nothing label-free bounds it from below; from above, errors are at least class_tv
        low, high = 0.0, min(1.0, 1.0 - tv + tv_noise(ys, k, len(tgt)))
    return Estimate(found.estimate, low, high, DEFAULT_ESTIMATOR, verdict, why, found.threshold, found.temperature,
                    found.score, len(tgt), len(src), signals, summarise_target(tempered(tgt, found.temperature)))


def tv_noise(source_labels: np.ndarray, k: int, target_images: int) -> float:
    """The total variation two samples of these sizes from the same class frequencies show on average (normal
    approximation): what ``class_tv`` is before any difference between the sites."""
    q = class_frequencies(source_labels, k)
    spread = np.sqrt(q * (1 - q) * (1 / len(source_labels) + 1 / target_images))
    return float(0.5 * np.sum(spread) * math.sqrt(2 / math.pi))


def judge(signals: dict) -> tuple[str, str]:
    """"reliable", or "unreliable" and why, from label-free signals where the benchmark saw the estimators fail:
    a target as confident as held-out source images (confidence trained in, not earned), predicted classes
    whose frequencies differ from the source's (many errors, or a label shift; either breaks ATC), or ATC's two
    scores disagreeing (a network that underestimated a target easier than its source by 17-22 points)."""
    reasons = []
    if signals["target_conf"] - signals["source_conf"] > -CONFIDENCE_GAP:
        reasons.append(f"the network is about as confident on the target ({signals['target_conf']:.1%}) as on source "
                       f"images it never trained on ({signals['source_conf']:.1%}): confidence that adaptation "
                       "trained into the target (SEED, entropy minimisation) rather than earned")
    if signals["class_tv"] > CLASS_TV:
        reasons.append(f"its predicted classes on the target are distributed unlike the source's classes (total "
                       f"variation {signals['class_tv']:.3f} > {CLASS_TV}): many errors (errors are at least that "
                       "share) or classes whose frequencies differ between the sites")
    if signals["atc_score_gap"] > ATC_SCORE_GAP:
        reasons.append(f"ATC on the other confidence score differs by {100 * signals['atc_score_gap']:.1f} points (> "
                       f"{100 * ATC_SCORE_GAP:.0f}): the shift does not change confidence alike across images, "
                       "which both rely on")
    if not reasons:
        return "reliable", ""
    return "unreliable", ("; and ".join(reasons) + ". Where these signals showed, estimates were up to 73 points "
                          "off in benchmarks/accuracy_estimation.py: label a few target images for a valid interval "
                          "(slimda deploy --label-budget N)")


SUMMARY_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)


def summarise_target(probs: np.ndarray) -> dict:
    """What a device compares its own images with, to notice its site drifting from the deploy-time target:
    quantiles of the (tempered) top-1 confidence and of the entropy, and the predicted classes' frequencies."""
    conf, entropy = probs.max(1), -confidence_score(probs, "neg-entropy")
    return {"quantiles": list(SUMMARY_QUANTILES),
            "confidence_quantiles": [round(float(q), 5) for q in np.quantile(conf, SUMMARY_QUANTILES)],
            "entropy_quantiles": [round(float(q), 5) for q in np.quantile(entropy, SUMMARY_QUANTILES)],
            "confidence_mean": round(float(conf.mean()), 5), "entropy_mean": round(float(entropy.mean()), 5),
            "class_frequencies": [round(float(f), 5) for f in class_frequencies(probs.argmax(1), probs.shape[1])]}


def predicted_correct(probs: torch.Tensor | np.ndarray, temperature: float) -> np.ndarray:
    """Per image, the estimated chance the network is right: its top-1 probability after the estimate's
    temperature (the predictions prediction-powered inference corrects)."""
    return tempered(probs, temperature).max(1)


def labelled_estimate(predicted: np.ndarray, picked: list[int] | np.ndarray, observed: np.ndarray,
                      confidence: float = 0.9) -> tuple[LabelledEstimate, str]:
    """Accuracy from labelled images ``picked`` (``observed``: 1 right, 0 wrong) and every image's predicted
    chance of being right (``predicted``), with its interval and the method's name."""
    predicted = np.asarray(predicted, float)
    observed = np.asarray(observed, float)
    if len(observed) < 2:
        raise ValueError("an estimate from labels needs at least two labelled images")
    return ppi_mean(predicted, predicted[np.asarray(picked, int)], observed, confidence), "prediction-powered"
