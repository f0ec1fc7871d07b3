"""The model bank: one slimmable backbone plus SymNet's Cs/Ct head and the OSTC head Ca.

``ModelBank.set_config`` selects a sub-network; ``ModelBank.extract`` returns it as a plain, physically
slimmed network of ordinary torch layers (what is exported, counted and timed). ``save_bank`` and
``load_bank`` store only tensors and plain types, so loading uses ``torch.load(weights_only=True)``
and never executes a pickled object.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimda.backbones import SlimBackbone, create_backbone
from slimda.data.preprocessing import Preprocessing
from slimda.errors import ConfigError, SlimdaError
from slimda.model.heads import BankOutput, get_head
from slimda.model.ops import SlimLinear, set_widths, to_static
from slimda.model.space import DEFAULT_RATIOS, WidthConfig, WidthSpace

BANK_FORMAT = "slimda-bank"
BANK_FORMAT_VERSION = 1


class StaticBank(nn.Module):
    """A sub-network as plain torch layers with every head: ``forward`` gives a ``BankOutput`` like the bank's.

    What scoring runs: BatchNorm is recalibrated on it, not on the bank, so the bank is never modified and
    what is scored is exactly what ships (``net(head)`` shares its tensors).
    """

    def __init__(self, backbone: nn.Module, head_st: nn.Linear, head_a: nn.Linear, num_classes: int) -> None:
        super().__init__()
        self.backbone, self.head_st, self.head_a = backbone, head_st, head_a
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> BankOutput:
        features = self.backbone(x)
        return BankOutput(features, self.head_st(features), self.head_a(features))

    def net(self, head: str = "ca") -> ExtractedNet:
        """The deployable network with one test-time head (sharing this module's backbone)."""
        net = ExtractedNet(self.backbone, get_head(head).static(self.head_st, self.head_a, self.num_classes))
        net.train(self.training)
        return net


class ExtractedNet(nn.Module):
    """A deployable sub-network: static backbone and one test-time head, outputs ``[N, K]`` scores."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ModelBank(nn.Module):
    """Weight-sharing bank of sub-networks over a backbone's width space."""

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_channels: int = 3,
        ratios: Sequence[float] = DEFAULT_RATIOS,
        multiple: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.backbone: SlimBackbone = create_backbone(arch, in_channels=in_channels)
        self.arch = arch
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.space = WidthSpace(arch, self.backbone.sites, tuple(ratios), multiple or self.backbone.channel_multiple)
        dim, site = self.backbone.feature_dim, self.backbone.feature_site
        self.head_st = SlimLinear(dim, 2 * num_classes, in_site=site, out_site=None)
        self.head_a = SlimLinear(dim, num_classes, in_site=site, out_site=None)
        self.config = self.space.largest()

    def set_config(self, config: WidthConfig) -> None:
        """Make the bank compute the sub-network ``config`` (validated against this bank's space)."""
        if config.arch != self.arch:
            raise ConfigError(f"configuration is for {config.arch!r}, this bank is {self.arch!r}")
        self.config = self.space.config(config.as_dict())
        set_widths(self, self.config.as_dict())

    def forward(self, x: torch.Tensor) -> BankOutput:
        features = self.backbone(x)
        return BankOutput(features, self.head_st(features), self.head_a(features))

    def scores(self, x: torch.Tensor, head: str = "ca") -> torch.Tensor:
        return get_head(head).scores(self(x), self.num_classes)

    def extract_all(self, config: WidthConfig | None = None) -> StaticBank:
        """The sub-network ``config`` (default: the current one) with all heads, as plain torch layers.

        The bank keeps its current configuration afterwards; the result shares no tensor with the bank.
        """
        previous = self.config
        if config is not None:
            self.set_config(config)
        try:
            static = StaticBank(to_static(self.backbone), to_static(self.head_st), to_static(self.head_a),
                                self.num_classes)
        finally:
            self.set_config(previous)
        static.train(self.training)
        return static

    def extract(self, config: WidthConfig | None = None, head: str = "ca") -> ExtractedNet:
        """The sub-network ``config`` (default: the current one) with ``head``, as plain torch layers."""
        get_head(head)  # an unknown head fails before any copying
        return self.extract_all(config).net(head)

    def describe(self) -> dict:
        """Plain-typed description of the bank (everything needed to rebuild it, except weights)."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "space": self.space.to_dict(),
        }

    @classmethod
    def from_description(cls, desc: dict) -> ModelBank:
        space = desc["space"]
        return cls(desc["arch"], int(desc["num_classes"]), int(desc["in_channels"]),
                   tuple(space["ratios"]), int(space["multiple"]))


@dataclass(frozen=True)
class BankMeta:
    """What a bank carries besides weights: its classes, the preprocessing it was trained with, its test-time
    head and how it was trained. Stored as plain types in ``bank.pt`` (``to_dict``/``from_dict``)."""

    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    test_head: str = "ca"
    objective: str | None = None
    seed_ensemble: bool | None = None
    source: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        get_head(self.test_head)

    def to_dict(self) -> dict[str, object]:
        return {"class_names": list(self.class_names), "preprocessing": self.preprocessing.to_dict(),
                "objective": self.objective, "seed_ensemble": self.seed_ensemble, "test_head": self.test_head,
                "source": self.source, "target": self.target}

    @classmethod
    def from_dict(cls, data: Mapping[str, object], where: str = "bank metadata") -> BankMeta:
        """Inverse of ``to_dict``; a record without preprocessing or classes is a ``SlimdaError`` naming ``where``."""
        missing = [k for k in ("class_names", "preprocessing") if not data.get(k)]
        if missing:
            raise SlimdaError(f"{where} lacks {', '.join(missing)}: it was not written by slimda-train")
        prep = data["preprocessing"]
        return cls(
            class_names=tuple(str(c) for c in data["class_names"]),  # type: ignore[union-attr]
            preprocessing=prep if isinstance(prep, Preprocessing) else Preprocessing.from_dict(prep),  # type: ignore[arg-type]
            test_head=str(data.get("test_head") or "ca"),
            objective=data.get("objective"),  # type: ignore[arg-type]
            seed_ensemble=data.get("seed_ensemble"),  # type: ignore[arg-type]
            source=data.get("source"), target=data.get("target"))  # type: ignore[arg-type]

    @property
    def input_chw(self) -> tuple[int, int, int]:
        """Channels, height and width of the network's input."""
        return (self.preprocessing.channels, *self.preprocessing.size)


def save_bank(bank: ModelBank, path: str | os.PathLike, meta: BankMeta) -> None:
    """Write ``bank.pt`` atomically: weights, width space, and the metadata as plain types."""
    payload = {
        "format": BANK_FORMAT,
        "version": BANK_FORMAT_VERSION,
        "bank": bank.describe(),
        "state_dict": {k: v.detach().cpu() for k, v in bank.state_dict().items()},
        "metadata": meta.to_dict(),
    }
    atomic_torch_save(payload, path)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    from slimda.tables import atomic_output

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_bank(path: str | os.PathLike) -> tuple[ModelBank, BankMeta]:
    """Load a bank saved by ``save_bank``; returns the bank (eval mode) and its metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / "bank.pt"
    if not path.is_file():
        raise SlimdaError(f"no model bank at {path}: pass a run directory made by slimda-train or its bank.pt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the weights-only unpickler's notes on foreign files
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a bank file"
        raise SlimdaError(f"{path} is not a slimda model bank (cannot be read as one: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != BANK_FORMAT:
        raise SlimdaError(f"{path} is not a slimda model bank (no '{BANK_FORMAT}' header)")
    if payload.get("version", 0) > BANK_FORMAT_VERSION:
        raise SlimdaError(f"{path} was written by a newer slimda (format {payload['version']}); upgrade slimda")
    bank = ModelBank.from_description(payload["bank"])
    bank.load_state_dict(payload["state_dict"])
    bank.eval()
    return bank, BankMeta.from_dict(payload.get("metadata") or {}, where=f"{path}'s metadata")
