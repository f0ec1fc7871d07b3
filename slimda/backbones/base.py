"""What every slimmable backbone provides to the bank."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from slimda.errors import ConfigError
from slimda.model.space import Site


@dataclass(frozen=True)
class BackboneCfg:
    """An architecture's defaults, registered with it (timm's ``_cfg``).

    ``input_size``: the square size it is profiled and trained at unless ``--resolution`` says otherwise;
    ``data_sized``: trained at the larger native size of the two domains instead (small digit images);
    ``in_channels``, ``mean``/``std``: what its inputs are when the data has that many channels.
    """

    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_sized: bool = False


class SiteBook:
    """Collects width sites in network order while a backbone builds its layers."""

    def __init__(self) -> None:
        self.sites: list[Site] = []

    def add(self, name: str, max_channels: int) -> str:
        if any(s.name == name for s in self.sites):
            raise ValueError(f"duplicate width site {name!r}")
        self.sites.append(Site(name, max_channels))
        return name


class SlimBackbone(nn.Module):
    """A feature extractor over width sites. ``forward(x)`` returns pooled features ``[N, C]``.

    Subclasses set ``arch``, ``sites``, ``feature_site`` (the site of the feature vector),
    ``channel_multiple`` (channel rounding); ``create_backbone`` sets ``cfg`` (the registered defaults).
    """

    arch: str
    sites: tuple[Site, ...]
    feature_site: str
    channel_multiple: int = 8
    cfg: BackboneCfg
    # Keys of torchvision's classifier, dropped when loading its state dict (the bank has its own heads).
    torchvision_classifier_prefix: str | None = None

    def timing_blocks(self) -> list[tuple[str, nn.Module]]:
        """The top-level blocks in order: applying them in sequence, then flattening, equals ``forward``.

        Latency tables time each block alone (keyed by its shapes). Works on the extracted static network
        too, since extraction keeps the container classes. Returned wrappers are not registered as children.
        """
        raise NotImplementedError(f"{type(self).__name__} does not list its blocks")

    @property
    def default_input_size(self) -> int:
        return self.cfg.input_size

    @property
    def feature_dim(self) -> int:
        return next(s.max_channels for s in self.sites if s.name == self.feature_site)

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor],
                                    source: str = "the state dict") -> tuple[str, ...]:
        """Load a torchvision model's state dict (ImageNet weights brought as a file) at full width.

        Its classifier is dropped (the bank has its own heads); any other key that does not fit is a
        ``ConfigError`` naming it (and ``source``), and nothing is loaded then. Returns the keys dropped.
        """
        from slimda.model.fit import check_fit

        prefix = self.torchvision_classifier_prefix
        if prefix is None:
            raise ConfigError(f"{self.arch} has no torchvision counterpart to load weights from")
        features = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        check_fit(self, features, self.arch, source)
        self.load_state_dict(features)
        return tuple(k for k in state_dict if k.startswith(prefix))
