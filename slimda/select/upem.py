"""UPEM: unsupervised performance evaluation of a sub-network on unlabelled target images.

``UPEM(c) = mean_x D(p_c(x), p_anchor(x))``: how far a candidate's target predictions are from the anchor's
(the largest model, BatchNorm recalibrated on target). Lower is better. Its worth is measured in
``benchmarks/upem_correlation.py`` (rank correlation with true target accuracy), not assumed.
"""

from __future__ import annotations

import torch

DISTANCES: tuple[str, ...] = ("kl", "skl", "l1", "disagree")
DEFAULT_DISTANCE = "kl"


def upem(candidate: torch.Tensor, anchor: torch.Tensor, distance: str = DEFAULT_DISTANCE) -> float:
    """Mean distance between class-probability rows ``[N, K]`` of a candidate and of the anchor.

    ``kl``: KL(anchor ‖ candidate); ``skl``: symmetric KL; ``l1``: L1 distance of the probability
    vectors; ``disagree``: share of images whose top-1 classes differ.
    """
    if candidate.shape != anchor.shape:
        raise ValueError(f"candidate {tuple(candidate.shape)} and anchor {tuple(anchor.shape)} differ in shape")
    p = candidate.clamp_min(1e-12)
    q = anchor.clamp_min(1e-12)
    if distance == "kl":
        values = (q * (q.log() - p.log())).sum(dim=1)
    elif distance == "skl":
        values = ((q - p) * (q.log() - p.log())).sum(dim=1)
    elif distance == "l1":
        values = (candidate - anchor).abs().sum(dim=1)
    elif distance == "disagree":
        values = (candidate.argmax(dim=1) != anchor.argmax(dim=1)).float()
    else:
        from slimda.errors import ConfigError

        raise ConfigError(f"unknown UPEM distance {distance!r}; choose one of {', '.join(DISTANCES)}")
    return float(values.mean())
