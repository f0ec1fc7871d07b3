"""Tzeng et al. (ICCV 2015): a domain classifier trained on domain labels, alternating with a *domain
confusion* loss that pulls its output on the features towards uniform (soft labels live in ``common``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimda.train.objectives import register
from slimda.train.objectives.base import AdversarialObjective, Batch, FeaturePath, ModelOutputs, source_task_losses


def domain_confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the domain classifier's output and the uniform distribution.

    Inputs: domain logits ``[N, 2]`` for source and target features (through a frozen classifier).
    Minimal when the classifier cannot tell the domains apart.
    """
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


@register
class DomainConfusion(AdversarialObjective):
    """The classifier learns the domains on detached features; the features learn, through its frozen
    weights, to leave it uniform (weighted by ``confusion_weight`` × λ)."""

    name = "confusion"

    def feature_path(self, head_st: nn.Module, features: torch.Tensor, grl_coeff: float) -> FeaturePath:
        st = head_st(features)
        domain_det = self.discriminator(features.detach())
        return FeaturePath(st, domain=self.discriminator(features, frozen=True), domain_det=domain_det)

    def adaptation_losses(self, out: ModelOutputs, batch: Batch, k: int, lam: float) -> dict[str, torch.Tensor]:
        nt_end = batch.source.shape[0] + batch.target.shape[0]
        parts = source_task_losses(out, batch, k)
        parts["domain"] = self.domain_loss(out.path.domain_det, batch)
        parts["domain_confusion"] = self.confusion_weight * lam * domain_confusion_loss(out.path.domain[:nt_end])
        return parts
