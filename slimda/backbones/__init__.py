"""Registry of slimmable backbones (timm-style ``create_backbone(name)``), one family per file.

Each family registers its constructors with a ``BackboneCfg``: the defaults that belong to the architecture
(input size, input channels, normalisation), so no code outside this registry tests an architecture's name.
"""

from __future__ import annotations

from collections.abc import Callable

from slimda.backbones.base import BackboneCfg, SlimBackbone
from slimda.errors import ConfigError

_REGISTRY: dict[str, tuple[Callable[..., SlimBackbone], BackboneCfg]] = {}


def register(name: str, cfg: BackboneCfg) -> Callable[[Callable[..., SlimBackbone]], Callable[..., SlimBackbone]]:
    def wrap(fn: Callable[..., SlimBackbone]) -> Callable[..., SlimBackbone]:
        _REGISTRY[name] = (fn, cfg)
        return fn

    return wrap


def _load_families() -> None:
    # Importing the family modules registers them; done on first use, not at import time.
    from slimda.backbones import digits_cnn, mobilenet_v2, resnet  # noqa: F401


def list_backbones() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def _entry(name: str) -> tuple[Callable[..., SlimBackbone], BackboneCfg]:
    _load_families()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def backbone_cfg(name: str) -> BackboneCfg:
    """The architecture's defaults (input size, channels, mean/std); an unknown name is a ``ConfigError``."""
    return _entry(name)[1]


def create_backbone(name: str, in_channels: int | None = None) -> SlimBackbone:
    """A freshly initialised slimmable backbone at full width (``in_channels``: the cfg's by default)."""
    fn, cfg = _entry(name)
    backbone = fn(in_channels=cfg.in_channels if in_channels is None else in_channels)
    backbone.cfg = cfg
    return backbone


__all__ = ["BackboneCfg", "SlimBackbone", "backbone_cfg", "create_backbone", "list_backbones", "register"]
