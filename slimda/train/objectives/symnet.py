"""SymNet (Zhang et al., CVPR 2019), the paper's base objective: one 2K-way head, Cs the first K logits, Ct
the last K. Classifier losses update the heads only (computed on detached features); feature losses update
the backbone only (computed through frozen head weights). Gradient routing, not gradient reversal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimda.train.objectives import register
from slimda.train.objectives.base import Batch, FeaturePath, ModelOutputs, Objective
from slimda.train.objectives.common import frozen_linear


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



@register
class SymNet(Objective):
    name = "symnet"

    def feature_path(self, head_st: nn.Module, features: torch.Tensor, grl_coeff: float) -> FeaturePath:
        return FeaturePath(frozen_linear(head_st, features))  # feature path: updates the backbone only

    def adaptation_losses(self, out: ModelOutputs, batch: Batch, k: int, lam: float) -> dict[str, torch.Tensor]:
        ns, nt = batch.source.shape[0], batch.target.shape[0]
        parts = symnet_classifier_losses(out.st_det[:ns], out.st_det[ns:ns + nt], batch.labels, k)
        feat = symnet_feature_losses(out.st[:ns], out.st[ns:ns + nt], batch.labels, k)
        parts["category_confusion"] = feat["category_confusion"]
        parts["domain_confusion"] = lam * feat["domain_confusion"]
        parts["entropy"] = lam * feat["entropy"]
        return parts

    def labelled_task_loss(self, out: ModelOutputs, rows: slice, labels: torch.Tensor, k: int) -> torch.Tensor:
        """Ct learns the labelled target classes on the classifier path, and the features learn them too."""
        return F.cross_entropy(out.st_det[rows, k:], labels) + F.cross_entropy(out.st[rows, k:], labels)

    def class_probabilities(self, st: torch.Tensor, k: int) -> torch.Tensor:
        """SymNet's joint prediction q_k = p_k + p_{k+K}, p the softmax over all 2K logits."""
        p = torch.softmax(st, dim=1)
        return p[:, :k] + p[:, k:]
