"""Shared test helpers."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm


def randomise_batchnorm(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters.

    At initialisation (mean 0, var 1, weight 1, bias 0) deep nets saturate and give the same output for
    every input, which would let a broken extraction pass a parity test.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.25)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.fixture
def rng_seed() -> int:
    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="session")
def photo_domains(tmp_path_factory):
    """Two labelled JPEG photo domains (source, target) made from scikit-learn's sample photos."""
    from slimda.data.sample_domains import make_photo_domains

    return make_photo_domains(tmp_path_factory.mktemp("photos"))


@contextlib.contextmanager
def training_killed_at(step: int):
    """Inside: a training run is interrupted (KeyboardInterrupt) when it reaches ``step``, as Ctrl-C would."""
    from slimda.train.trainer import Trainer

    original = Trainer.train_step

    def killed(self, at, *args, **kwargs):
        if at == step:
            raise KeyboardInterrupt
        return original(self, at, *args, **kwargs)

    Trainer.train_step = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        Trainer.train_step = original
