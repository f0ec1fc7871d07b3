"""What every intra-model adaptation objective (``L_dc``) is: a small ``nn.Module`` (TLlib style) that owns
its discriminator, if any, and turns one model's head outputs into named loss terms.

The trainer runs each model of a model batch once: the bank computes the outputs every objective shares
(Cs/Ct on detached features, Ca with and without the backbone), then ``Objective.feature_path`` adds what
this objective's feature losses read. ``Objective.losses`` returns ``L_dc``'s terms for that model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from slimda.model.ops import set_widths
from slimda.train.objectives.common import DomainDiscriminator, domain_classification_loss, soft_label_loss


@dataclass
class Batch:
    """One step's images: labelled source, unlabelled target, and labelled target images when semi-supervised."""

    source: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor
    labeled_target: torch.Tensor | None = None
    labeled_target_labels: torch.Tensor | None = None


@dataclass
class FeaturePath:
    """What an objective's feature losses read, computed with gradients into the backbone.

    ``st``: Cs/Ct logits on the features ``[N, 2K]`` (SymNet reads them through frozen weights); ``domain`` /
    ``domain_det``: a domain classifier on the features and on detached features ``[N, 2]``, where one exists.
    """

    st: torch.Tensor
    domain: torch.Tensor | None = None
    domain_det: torch.Tensor | None = None


@dataclass
class ModelOutputs:
    """One model of the model batch on all images of a step, concatenated as source, target, labelled target."""

    st_det: torch.Tensor  # Cs/Ct on detached features: the classifier path (updates the heads only)
    a: torch.Tensor  # Ca on the features: SEED trains Ca and the backbone
    a_det: torch.Tensor  # Ca on detached features: without SEED, Ca learns from source labels only
    path: FeaturePath

    @property
    def st(self) -> torch.Tensor:
        return self.path.st

    def to_float(self) -> ModelOutputs:
        """These outputs in float32: under mixed precision the heads give bf16/fp16 logits, and the losses'
        logs and exponentials (SEED's ensemble, the domain losses) are computed in float32."""
        def f(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.float()

        path = FeaturePath(f(self.path.st), f(self.path.domain), f(self.path.domain_det))
        return ModelOutputs(f(self.st_det), f(self.a), f(self.a_det), path)


class Objective(nn.Module):
    """``L_dc`` for one model. Subclasses set ``name`` and implement ``adaptation_losses``; the labelled-target
    terms (cross-entropy on Ct and Tzeng et al.'s soft labels) are shared.

    Inputs everywhere: one model's ``ModelOutputs`` over ``Batch`` rows (source ``ns``, target ``nt``, labelled
    target last), ``k`` classes, the adaptation weight ``lam`` = λ(p).
    """

    name: ClassVar[str]

    def __init__(self, feature_dim: int, feature_site: str, *, confusion_weight: float = 1.0,
                 soft_weight: float = 0.1, soft_temperature: float = 2.0) -> None:
        super().__init__()
        self.confusion_weight = confusion_weight
        self.soft_weight = soft_weight
        self.soft_temperature = soft_temperature

    def activate(self, widths: Mapping[str, int]) -> None:
        """Follow the sampled model's widths (a discriminator's first layer reads the feature width)."""
        set_widths(self, widths)

    def feature_path(self, head_st: nn.Module, features: torch.Tensor, grl_coeff: float) -> FeaturePath:
        return FeaturePath(head_st(features))

    def adaptation_losses(self, out: ModelOutputs, batch: Batch, k: int, lam: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def labelled_task_loss(self, out: ModelOutputs, rows: slice, labels: torch.Tensor, k: int) -> torch.Tensor:
        """Labelled target images: cross-entropy of Ct on the feature path."""
        return F.cross_entropy(out.st[rows, k:], labels)

    def losses(self, out: ModelOutputs, batch: Batch, k: int, lam: float,
               soft_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``L_dc``'s terms for one model (SEED is added by the trainer across models)."""
        parts = self.adaptation_losses(out, batch, k, lam)
        if batch.labeled_target_labels is not None:
            rows = slice(batch.source.shape[0] + batch.target.shape[0], None)
            yl = batch.labeled_target_labels
            parts["target_task"] = self.labelled_task_loss(out, rows, yl, k)
            if soft_labels is not None:
                parts["soft_label"] = self.soft_weight * soft_label_loss(
                    out.st[rows, k:], yl, soft_labels, self.soft_temperature)
        return parts

    def class_probabilities(self, st: torch.Tensor, k: int) -> torch.Tensor:
        """Detached class probabilities ``[N, K]`` from Cs/Ct logits ``[N, 2K]``: what SEED ensembles."""
        return 0.5 * (torch.softmax(st[:, :k], dim=1) + torch.softmax(st[:, k:], dim=1))


class AdversarialObjective(Objective):
    """An objective with a two-way domain classifier on the features (DANN, domain confusion)."""

    def __init__(self, feature_dim: int, feature_site: str, **weights: float) -> None:
        super().__init__(feature_dim, feature_site, **weights)
        self.discriminator = DomainDiscriminator(feature_dim, feature_site)

    def domain_loss(self, domain: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The classifier's cross-entropy on domain labels over the source and target rows."""
        ns, nt = batch.source.shape[0], batch.target.shape[0]
        return domain_classification_loss(domain[:ns], domain[ns:ns + nt])


def source_task_losses(out: ModelOutputs, batch: Batch, k: int) -> dict[str, torch.Tensor]:
    """Cs and Ct both learn the source labels on the feature path (every objective but SymNet)."""
    st_s = out.st[: batch.source.shape[0]]
    return {"task_s": F.cross_entropy(st_s[:, :k], batch.labels), "task_t": F.cross_entropy(st_s[:, k:], batch.labels)}
