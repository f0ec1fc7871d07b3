"""Method-neutral pieces of the adaptation objectives, each with its inputs and shapes documented.

Frozen-weight linear layers, gradient reversal and the domain discriminator; the domain classification
loss DANN and domain confusion share; Tzeng et al.'s soft labels (ICCV 2015), which every objective applies
to labelled target images in the semi-supervised setting.

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


# ------------------------------------------------------------------ domain classification and soft labels


def domain_classification_loss(logits_source: torch.Tensor, logits_target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a domain classifier on domain labels (source 0, target 1). Inputs ``[N, 2]``."""
    zeros = torch.zeros(logits_source.shape[0], dtype=torch.long, device=logits_source.device)
    ones = torch.ones(logits_target.shape[0], dtype=torch.long, device=logits_target.device)
    return 0.5 * (F.cross_entropy(logits_source, zeros) + F.cross_entropy(logits_target, ones))


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
