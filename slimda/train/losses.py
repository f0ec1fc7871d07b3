"""Adaptation losses, each a small function or module with its inputs and shapes documented.

Method-neutral pieces (frozen-weight linear, gradient reversal, domain discriminator) come first; then
the objectives: SymNet (Zhang et al., CVPR 2019), Tzeng et al.'s domain confusion and soft labels
(ICCV 2015), DANN, and SEED (SlimDA's stochastic ensemble distillation).

Gradient routing is done by *what is detached*, never by zeroing gradients afterwards: a loss meant for
the classifiers is computed on detached features; a loss meant for the features is computed through a
copy of the classifier weights that is detached from the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slimda.model.ops import SlimLinear


def frozen_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with the layer's (active) weights detached: gradients reach ``x`` only."""
    if isinstance(layer, SlimLinear):
        weight = layer.weight[: layer.active_out, : layer.active_in]
        bias = layer.bias[: layer.active_out] if layer.bias is not None else None
    else:
        weight, bias = layer.weight, layer.bias
    return F.linear(x, weight.detach(), None if bias is None else bias.detach())


def adaptation_weight(progress: float) -> float:
    """λ = 2 / (1 + exp(-10 p)) - 1: ramps adaptation in from 0 to 1 over training progress p ∈ [0, 1]."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:  # noqa: ANN001
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coeff`` backward (DANN)."""
    return _GradientReverse.apply(x, coeff)


class DomainDiscriminator(nn.Module):
    """Two-way domain classifier on (slimmable) features: Linear → ReLU → Linear → 2 logits.

    Inputs: features ``[N, C]`` with ``C`` the active width of ``feature_site``. Shape: out ``[N, 2]``
    (class 0 = source, 1 = target).
    """

    def __init__(self, max_features: int, feature_site: str, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = SlimLinear(max_features, hidden, in_site=feature_site, out_site=None)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, features: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        if frozen:
            return frozen_linear(self.fc2, F.relu(frozen_linear(self.fc1, features)))
        return self.fc2(F.relu(self.fc1(features)))


# ---------------------------------------------------------------------------------------------- SymNet


def symnet_classifier_losses(
    st_source: torch.Tensor, st_target: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, torch.Tensor]:
    """SymNet's losses for the classifiers Cs, Ct and Cst. Compute them on *detached* features.

    Inputs: ``st_source [Ns, 2K]``, ``st_target [Nt, 2K]`` joint logits (Cs = first K, Ct = last K),
    ``labels [Ns]``. Returns ``task_s`` (CE of Cs on source), ``task_t`` (CE of Ct on source) and
    ``domain`` (Cst discriminates domains: source mass on the first half, target mass on the second).
    """
    k = num_classes
    log_p_source = F.log_softmax(st_source, dim=1)
    log_p_target = F.log_softmax(st_target, dim=1)
    return {
        "task_s": F.cross_entropy(st_source[:, :k], labels),
        "task_t": F.cross_entropy(st_source[:, k:], labels),
        "domain": -(torch.logsumexp(log_p_source[:, :k], dim=1).mean()
                    + torch.logsumexp(log_p_target[:, k:], dim=1).mean()),
    }


def symnet_feature_losses(
    st_source: torch.Tensor, st_target: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, torch.Tensor]:
    """SymNet's losses for the feature extractor. Compute them through *frozen* classifier weights.

    Returns ``category_confusion`` (source: the labelled class in both halves), ``domain_confusion``
    (target: equal mass on both halves) and ``entropy`` (target: entropy of q_k = p_k + p_{k+K}).
    """
    k = num_classes
    log_p_source = F.log_softmax(st_source, dim=1)
    log_p_target = F.log_softmax(st_target, dim=1)
    rows = torch.arange(labels.shape[0], device=labels.device)
    category = -0.5 * (log_p_source[rows, labels].mean() + log_p_source[rows, labels + k].mean())
    domain = -0.5 * (torch.logsumexp(log_p_target[:, :k], dim=1).mean()
                     + torch.logsumexp(log_p_target[:, k:], dim=1).mean())
    p_target = log_p_target.exp()
    q = p_target[:, :k] + p_target[:, k:]
    entropy = -(q * torch.log(q + 1e-12)).sum(dim=1).mean()
    return {"category_confusion": category, "domain_confusion": domain, "entropy": entropy}


# ------------------------------------------------------------------------ Tzeng et al. (ICCV 2015)


def domain_classification_loss(logits_source: torch.Tensor, logits_target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a domain classifier on domain labels (source 0, target 1). Inputs ``[N, 2]``."""
    zeros = torch.zeros(logits_source.shape[0], dtype=torch.long, device=logits_source.device)
    ones = torch.ones(logits_target.shape[0], dtype=torch.long, device=logits_target.device)
    return 0.5 * (F.cross_entropy(logits_source, zeros) + F.cross_entropy(logits_target, ones))


def domain_confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the domain classifier's output and the uniform distribution.

    Inputs: domain logits ``[N, 2]`` for source and target features (through a frozen classifier).
    Minimal when the classifier cannot tell the domains apart.
    """
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


def soft_label_loss(logits: torch.Tensor, labels: torch.Tensor, soft_labels: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """Tzeng et al.'s soft-label loss for labelled target images.

    Inputs: ``logits [N, K]`` of labelled target images, their ``labels [N]``, ``soft_labels [K, K]``
    (row k: mean source softmax at temperature τ over source images of class k). The target softmax at
    τ is pulled towards the soft label of its class, transferring inter-class similarity.
    """
    log_p = F.log_softmax(logits / temperature, dim=1)
    return -(soft_labels[labels] * log_p).sum(dim=1).mean()


def class_means_of_softmax(logits: torch.Tensor, labels: torch.Tensor, num_classes: int,
                           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of softmax(logits/τ) and per-class counts, for updating soft labels."""
    probs = F.softmax(logits.detach() / temperature, dim=1)
    sums = torch.zeros(num_classes, num_classes, device=logits.device).index_add_(0, labels, probs)
    counts = torch.bincount(labels, minlength=num_classes).to(probs.dtype)
    return sums, counts


# ----------------------------------------------------------------------------------------------- SEED


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
