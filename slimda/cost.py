"""FLOPs and parameter counts of extracted sub-networks.

FLOPs follow fvcore's convention (one multiply-add counts as one FLOP), so a full-width ResNet-50 is
about 4.1 G, as usually quoted. Counting always runs on the extracted static network in eval mode.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """fvcore's FLOP count of ``module`` for one input of ``input_shape`` (``[N, C, H, W]``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore uses torch.jit at import, which warns of its deprecation
        from fvcore.nn import FlopCountAnalysis

    was_training = module.training
    module.eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore traces with torch.jit, which warns of its deprecation
            analysis = FlopCountAnalysis(module, torch.zeros(input_shape))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        module.train(was_training)
