"""SEED, SlimDA's stochastic ensemble distillation, and the OSTC head it trains.

On the target batch, the detached class probabilities of the sampled models are combined into an ensemble,
each weighted per image by its confidence, then sharpened (implicit entropy minimisation). The OSTC head
Ca of every model learns only from that ensemble; Cs/Ct learn only from the objective's ``L_dc``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONFIDENCES: tuple[str, ...] = ("max", "entropy")  # how a model's per-image weight in the ensemble is read

def seed_ensemble(probs: list[torch.Tensor], confidence: str = "max", temperature: float = 0.5) -> torch.Tensor:
    """SEED's sharpened ensemble of the model batch's target predictions.

    Inputs: one ``[N, K]`` probability tensor per sampled model (detached). Each model is weighted per
    image by its confidence (``"max"``: max probability; ``"entropy"``: exp(-entropy)); the weighted
    mean is sharpened as p̂_k ∝ p_k^(1/T). Shape: out ``[N, K]``, rows sum to 1.
    """
    stacked = torch.stack([p.detach() for p in probs])  # [M, N, K]
    if confidence == "max":
        weights = stacked.max(dim=2).values
    elif confidence == "entropy":
        weights = torch.exp((stacked * torch.log(stacked + 1e-12)).sum(dim=2))
    else:
        raise ValueError(f"unknown SEED confidence {confidence!r}")
    ensemble = (weights.unsqueeze(2) * stacked).sum(0) / weights.sum(0).unsqueeze(1).clamp_min(1e-12)
    sharpened = ensemble.clamp_min(1e-12) ** (1.0 / temperature)
    return sharpened / sharpened.sum(dim=1, keepdim=True)


def distillation_loss(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits [N, K]`` against soft targets ``[N, K]`` (L_seed for the head Ca)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
