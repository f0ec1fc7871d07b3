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


class BankCosts:
    """FLOPs and parameters of a bank's sub-networks for one input size, counted once per configuration."""

    def __init__(self, bank, input_chw: tuple[int, int, int]) -> None:
        self.bank, self.input_chw = bank, tuple(input_chw)
        self._flops: dict[str, float] = {}
        self._params: dict[str, float] = {}

    def flops(self, config) -> float:
        if config.id not in self._flops:
            self._flops[config.id] = float(count_flops(self.bank.extract(config), (1, *self.input_chw)))
        return self._flops[config.id]

    def params(self, config) -> float:
        if config.id not in self._params:
            self._params[config.id] = float(count_params(self.bank.extract(config)))
        return self._params[config.id]
