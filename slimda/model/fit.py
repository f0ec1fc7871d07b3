"""Whether a state dict fits a module exactly, and a message naming the first keys that do not.

Apart from ``slimda.model.pretrained`` (which reads banks too) so that a backbone can check a torchvision file
without importing the bank that is built from backbones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from slimda.errors import ConfigError

_SHOWN = 5  # keys named in a message


def _guess_architecture(keys: set[str]) -> str:
    """A hint for messages: which torchvision family a state dict's names belong to."""
    if "layer1.0.conv3.weight" in keys:
        return "a ResNet with bottleneck blocks (resnet50/101/152)"
    if "layer1.0.conv1.weight" in keys:
        return "a ResNet with basic blocks (resnet18/34)"
    if "features.1.conv.0.0.weight" in keys:
        return "a MobileNetV2"
    if any(k.startswith("features.") for k in keys):
        return "a network with a 'features' module (VGG, MobileNet, EfficientNet...)"
    return "an unknown naming scheme"


def check_fit(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, path: str | os.PathLike) -> None:
    """Raise a ``ConfigError`` naming the first keys of ``state`` that do not fit ``module`` exactly.

    Missing keys, unexpected keys and shape mismatches all count.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (needs {tuple(own[k].shape)})"
              for k in state if k in own and state[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"wrong shapes: {', '.join(shapes[:_SHOWN])}")
    if missing:
        parts.append(f"{len(missing)} keys missing from the file: {', '.join(missing[:_SHOWN])}")
    if unexpected:
        parts.append(f"{len(unexpected)} keys the bank does not have: {', '.join(unexpected[:_SHOWN])}")
    raise ConfigError(f"{path} does not fit {what} (the file looks like {_guess_architecture(set(state))}); "
                      + "; ".join(parts) + ". Nothing was loaded.")
