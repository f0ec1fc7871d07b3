"""The two models a latency table fits on its timings: the per-group regression that predicts a block key
nobody timed (``GroupModel``), and the correction from a sum of block latencies to a whole network's
(``fit_correction``). slimda.latency.table applies them; DESIGN §2.4 says why a table has both.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slimda.latency.plan import channel_features

# ------------------------------------------------------------------------------------- unseen keys

# Channel multiples tried per position (in, mid, out) before the features: CPU convolution kernels work in
# SIMD-wide channel blocks (AVX-512: 16 floats; 8 for AVX2 and int8 VNNI layouts), so a block with 20
# channels can cost what one with 32 does, and where a runtime blocks a position that way its time steps
# with ceil(channels / 16), not with channels.
GROUP_PADS = (1, 8, 16)


def padded(channels: Sequence[tuple[int, int, int]], pads: tuple[int, int, int]) -> np.ndarray:
    """The channel counts rounded up to a multiple of ``pads`` (one per position)."""
    c = np.asarray(channels, dtype=float).reshape(-1, 3)
    p = np.asarray(pads, dtype=float)
    return np.ceil(c / p) * p


def relative_lstsq(x: np.ndarray, y: np.ndarray, ridge: float = 0.0, free: int | None = None) -> np.ndarray:
    """Coefficients minimising Σ (x·coef / y − 1)², relative errors being what a ±10 % target asks for
    (columns scaled first: channel products and ones differ by orders of magnitude). ``ridge`` > 0 adds
    ``ridge · Σ coef²`` (scaled) over the columns after the first ``free``: shrinks them towards zero."""
    y = np.maximum(y, 1e-12)
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    a, b = x / scale / y[:, None], np.ones_like(y)
    if ridge > 0 and free is not None and free < x.shape[1]:
        penalty = np.zeros((x.shape[1] - free, x.shape[1]))
        penalty[:, free:] = np.sqrt(ridge) * np.eye(x.shape[1] - free)
        a, b = np.vstack([a, penalty]), np.concatenate([b, np.zeros(len(penalty))])
    coef, *_ = np.linalg.lstsq(a, b, rcond=1e-6)
    return coef / scale


def loo_error(x: np.ndarray, y: np.ndarray, ridge: float = 0.0, free: int | None = None) -> float:
    """Mean |relative error| of each point predicted by the fit on all the others (nan: too few points)."""
    if len(y) <= (x.shape[1] if free is None else free) + 1:
        return float("nan")
    errors = []
    for k in range(len(y)):
        keep = np.arange(len(y)) != k
        errors.append(abs(float(x[k] @ relative_lstsq(x[keep], y[keep], ridge, free)) / y[k] - 1))
    return float(np.mean(errors))


class GroupModel:
    """Latency of a block group as a function of its channel counts: least squares on ``channel_features``
    of the channels rounded up to per-position multiples (``pads``), minimising relative errors (what a
    ±10 % target asks for), floored at half the fastest measured key.

    ``pads`` is chosen among ``GROUP_PADS``³ by the group's leave-one-out error over its measured keys (all
    1 below ``2 × 8`` keys, too few to compare them honestly), unless given. On a 3-channel digits-cnn
    table (ONNX Runtime, 28²) it cut the leave-one-out error of the 28², 14² and 7² groups from 8.9, 8.5
    and 4.2 % to 3.9, 2.7 and 3.3 % (pads 1-16-16, 16-16-16, 16-1-1): benchmarks/lut_accuracy.py.
    """

    def __init__(self, channels: Sequence[tuple[int, int, int]], latencies_ms: Sequence[float],
                 pads: tuple[int, int, int] | None = None) -> None:
        y = np.asarray(latencies_ms, dtype=float)
        self.floor = 0.5 * float(y.min())
        self.points = len(y)
        self.loo_error = float("nan")
        if pads is None:
            pads = (1, 1, 1)
            if len(y) >= 2 * channel_features([(1, 1, 1)]).shape[1]:
                scored = [(loo_error(channel_features(padded(channels, p)), y), p)
                          for p in itertools.product(GROUP_PADS, repeat=3)]
                self.loo_error, pads = min(scored)  # ties: the smaller pads (product order)
        self.pads = pads
        self.coef = relative_lstsq(channel_features(padded(channels, pads)), y)

    def predict(self, channels: tuple[int, int, int]) -> float:
        value = float((channel_features(padded([channels], self.pads)) @ self.coef)[0])
        return max(value, self.floor)


# ------------------------------------------------------------------------------------------ correction

CORRECTION_TERMS = ("sum", "sum+weights", "sum+weights+spill")
SPILL_KNEE_QUANTILES = np.linspace(0.0, 0.6, 13)  # knees tried: these quantiles of the fit networks' weight MB
SPILL_MIN_POINTS = 12  # the spill form has 4 coefficients and a knee: fit it on at least this many networks
# Per-slot terms: shrinkages tried (inf: none), strongest first; the strongest whose leave-one-out error is
# within SLOT_TOLERANCE of the least is kept. They need twice as many networks as coefficients.
SLOT_RIDGES = (float("inf"), 10.0, 1.0, 0.1, 0.01, 0.0)
SLOT_TOLERANCE = 1.02


@dataclass(frozen=True)
class Correction:
    """``latency ≈ a·Σ blocks + b + c·weight MB + d·max(0, weight MB − knee) + Σ_s e_s·block_s`` (``c``,
    ``d`` = 0 unless the form has them; ``slot_coef`` = the ``e_s``, one per slot of the plan, empty unless
    the form ends in ``+slots``)."""

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    terms: str = "sum"
    points: int = 0
    loo_error: float = float("nan")  # leave-one-out mean |relative error| over the fit networks
    d: float = 0.0
    knee_mb: float = 0.0
    slot_coef: tuple[float, ...] = ()
    ridge: float = float("inf")  # the shrinkage the slot terms were fitted with

    def __call__(self, block_sum_ms: float, weights_mb: float, slot_ms: Sequence[float] = ()) -> float:
        if len(slot_ms) != len(self.slot_coef) and self.slot_coef:
            raise ValueError(f"this correction has {len(self.slot_coef)} slot terms, not {len(slot_ms)}")
        return (self.a * block_sum_ms + self.b + self.c * weights_mb + self.d * max(weights_mb - self.knee_mb, 0.0)
                + sum(e * t for e, t in zip(self.slot_coef, slot_ms)))


def _design(sums: np.ndarray, weights: np.ndarray, terms: str, knee: float = 0.0) -> np.ndarray:
    cols = [sums, np.ones_like(sums)]
    if terms != "sum":
        cols.append(weights)
    if terms == "sum+weights+spill":
        cols.append(np.maximum(weights - knee, 0.0))
    return np.stack(cols, axis=1)


def fit_correction(sums: Sequence[float], weights_mb: Sequence[float], measured: Sequence[float],
                   terms: str = "auto", slot_ms: Sequence[Sequence[float]] | None = None) -> Correction:
    """Relative least squares of measured whole networks on their block sums (and weight MB).

    ``terms="auto"`` picks the form with the lowest leave-one-out error. Why the weight terms: on CPUs whose
    caches hold a lone block's weights but not a whole network's, the whole network also streams its
    weights from memory, a cost that grows with the weight bytes rather than with the block sum (``c``);
    that cost per MB changes where the weights outgrow a cache level (``d``, above a knee chosen from the
    fit networks' weight sizes by the same leave-one-out error; measured on resnet18 64² here: ~12-13 MB).

    With ``slot_ms`` (each network's block latencies, in slot order) ``auto`` then tries one more term per
    slot, shrunk towards zero by each of ``SLOT_RIDGES``: a block timed alone can cost far more or less than
    inside the network, where the runtime fuses it with its neighbours and keeps their layout (OpenVINO,
    digits-cnn at 32²: a 16-channel stem took 3× its 8- and 12-channel neighbours alone, because its output
    left the runtime's 16-channel blocked layout; in the network it does not).
    """
    s, w, y = (np.asarray(v, dtype=float) for v in (sums, weights_mb, measured))
    if len(y) < 2:
        return Correction(points=len(y))
    if terms != "auto":
        candidates = [terms]
    else:
        candidates = ["sum"] if len(y) < 8 else [t for t in CORRECTION_TERMS
                                                  if t != "sum+weights+spill" or len(y) >= SPILL_MIN_POINTS]
    best: Correction | None = None
    for form in candidates:
        knees = sorted(set(np.quantile(w, SPILL_KNEE_QUANTILES))) if form == "sum+weights+spill" else [0.0]
        for knee in knees:
            x = _design(s, w, form, knee)
            coef = relative_lstsq(x, y)
            fit = Correction(float(coef[0]), float(coef[1]), float(coef[2]) if len(coef) > 2 else 0.0, form,
                             len(y), loo_error(x, y), float(coef[3]) if len(coef) > 3 else 0.0, float(knee))
            if best is None or fit.loo_error < best.loo_error or np.isnan(best.loo_error):
                best = fit
    assert best is not None
    if terms == "auto" and slot_ms is not None:
        best = _with_slot_terms(best, s, w, y, np.asarray(slot_ms, dtype=float))
    return best


def _with_slot_terms(base: Correction, s: np.ndarray, w: np.ndarray, y: np.ndarray, slots: np.ndarray) -> Correction:
    """``base`` with per-slot terms where they lower the leave-one-out error (see ``fit_correction``)."""
    x_base = _design(s, w, base.terms, base.knee_mb)
    free = x_base.shape[1]
    if np.isnan(base.loo_error) or len(y) < 2 * (free + slots.shape[1]):
        return base
    x = np.concatenate([x_base, slots], axis=1)
    scored = [(base.loo_error, float("inf"))] + [(loo_error(x, y, r, free), r) for r in SLOT_RIDGES[1:]]
    least = min(e for e, _ in scored)
    error, ridge = next((e, r) for e, r in scored if e <= least * SLOT_TOLERANCE)
    if ridge == float("inf"):
        return base
    coef = relative_lstsq(x, y, ridge, free)
    c = list(coef[:free]) + [0.0] * (4 - free)
    return Correction(float(c[0]), float(c[1]), float(c[2]), f"{base.terms}+slots", len(y), error, float(c[3]),
                      base.knee_mb, tuple(float(v) for v in coef[free:]), ridge)
