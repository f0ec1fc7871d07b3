"""DANN (Ganin & Lempitsky, ICML 2015): a domain classifier behind a gradient reversal layer."""

from __future__ import annotations

import torch
from torch import nn

from slimda.train.objectives import register
from slimda.train.objectives.base import AdversarialObjective, Batch, FeaturePath, ModelOutputs, source_task_losses
from slimda.train.objectives.common import reverse_gradient


@register
class DANN(AdversarialObjective):
    """The domain classifier learns the domains; the reversed gradient makes the features indistinguishable."""

    name = "dann"

    def feature_path(self, head_st: nn.Module, features: torch.Tensor, grl_coeff: float) -> FeaturePath:
        st = head_st(features)
        return FeaturePath(st, domain=self.discriminator(reverse_gradient(features, grl_coeff)))

    def adaptation_losses(self, out: ModelOutputs, batch: Batch, k: int, lam: float) -> dict[str, torch.Tensor]:
        parts = source_task_losses(out, batch, k)
        parts["domain"] = self.domain_loss(out.path.domain, batch)
        return parts
