"""No adaptation: Cs and Ct learn the source labels (the baseline every objective is compared with)."""

from __future__ import annotations

import torch

from slimda.train.objectives import register
from slimda.train.objectives.base import Batch, ModelOutputs, Objective, source_task_losses


@register
class SourceOnly(Objective):
    name = "source-only"

    def adaptation_losses(self, out: ModelOutputs, batch: Batch, k: int, lam: float) -> dict[str, torch.Tensor]:
        return source_task_losses(out, batch, k)
