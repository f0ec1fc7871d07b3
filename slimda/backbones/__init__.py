"""Registry of slimmable backbones (timm-style ``create_backbone(name)``), one family per file."""

from __future__ import annotations

from collections.abc import Callable

from slimda.backbones.base import SlimBackbone
from slimda.errors import ConfigError

_REGISTRY: dict[str, Callable[..., SlimBackbone]] = {}


def register(name: str) -> Callable[[Callable[..., SlimBackbone]], Callable[..., SlimBackbone]]:
    def wrap(fn: Callable[..., SlimBackbone]) -> Callable[..., SlimBackbone]:
        _REGISTRY[name] = fn
        return fn

    return wrap


def _load_families() -> None:
    # Importing the family modules registers them; done on first use, not at import time.
    from slimda.backbones import digits_cnn, mobilenet_v2, resnet  # noqa: F401


def list_backbones() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def create_backbone(name: str, in_channels: int = 3) -> SlimBackbone:
    """A freshly initialised slimmable backbone at full width."""
    _load_families()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](in_channels=in_channels)


__all__ = ["SlimBackbone", "create_backbone", "list_backbones", "register"]
