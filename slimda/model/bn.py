"""BatchNorm statistics recalibration (US-Nets post-statistics; on target images this is AdaBN).

A sub-network's BN statistics are not the slice of the full network's: before a configuration is
evaluated or exported, its statistics are re-estimated as exact averages over a few batches of images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recalibrate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
) -> int:
    """Reset every BatchNorm's statistics and re-estimate them as a cumulative average over ``batches``.

    ``forward(model, x)`` runs the model (default ``model(x)``). Returns the number of images used; the
    model is left in eval mode with its parameters untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: exact mean over all batches
    model.train()
    seen = 0
    try:
        for x in batches:
            if forward is None:
                model(x)
            else:
                forward(model, x)
            seen += int(x.shape[0])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    if seen == 0 and norms:
        raise ValueError("BatchNorm recalibration got no images")
    return seen
