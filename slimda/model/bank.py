"""The model bank: one slimmable backbone plus SymNet's Cs/Ct head and the OSTC head Ca.

``ModelBank.set_config`` selects a sub-network; ``ModelBank.extract`` returns it as a plain, physically
slimmed network of ordinary torch layers (what is exported, counted and timed). ``save_bank`` and
``load_bank`` store only tensors and plain types, so loading uses ``torch.load(weights_only=True)``
and never executes a pickled object.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from slimda.backbones import SlimBackbone, create_backbone
from slimda.errors import ConfigError, SlimdaError
from slimda.model.ops import SlimLinear, set_widths, to_static
from slimda.model.space import DEFAULT_RATIOS, WidthConfig, WidthSpace

# Test-time heads: Ca (OSTC), Ct / Cs (the halves of SymNet's joint head) and Cst (SymNet's joint
# prediction q_k = p_k + p_{k+K}).
HEADS: tuple[str, ...] = ("ca", "ct", "cs", "cst")
BANK_FORMAT = "slimda-bank"
BANK_FORMAT_VERSION = 1


class BankOutput(NamedTuple):
    features: torch.Tensor  # [N, C]
    st_logits: torch.Tensor  # [N, 2K]: Cs then Ct
    a_logits: torch.Tensor  # [N, K]


def symnet_joint_log_probs(st_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log q_k with q_k = p_k + p_{k+K}, p the softmax over all 2K logits (SymNet's Cst prediction)."""
    probs = torch.softmax(st_logits, dim=1)
    return torch.log(probs[:, :num_classes] + probs[:, num_classes:] + 1e-12)


def head_scores(out: BankOutput, head: str, num_classes: int) -> torch.Tensor:
    """Class scores ``[N, K]`` of one test-time head (logits, or log-probabilities for ``cst``)."""
    if head == "ca":
        return out.a_logits
    if head == "cs":
        return out.st_logits[:, :num_classes]
    if head == "ct":
        return out.st_logits[:, num_classes:]
    if head == "cst":
        return symnet_joint_log_probs(out.st_logits, num_classes)
    raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")


class JointHead(nn.Module):
    """Cst as a plain module for export: the 2K-way linear layer followed by SymNet's class merge."""

    def __init__(self, linear: nn.Linear, num_classes: int) -> None:
        super().__init__()
        self.linear = linear
        self.num_classes = num_classes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return symnet_joint_log_probs(self.linear(features), self.num_classes)


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
        return head_scores(self(x), head, self.num_classes)

    def extract(self, config: WidthConfig | None = None, head: str = "ca") -> ExtractedNet:
        """The sub-network ``config`` (default: the current one) with ``head``, as plain torch layers.

        The bank keeps its current configuration afterwards; the result shares no tensor with the bank.
        """
        if head not in HEADS:
            raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        previous = self.config
        if config is not None:
            self.set_config(config)
        try:
            backbone = to_static(self.backbone)
            k = self.num_classes
            if head == "ca":
                head_module: nn.Module = to_static(self.head_a)
            else:
                st = to_static(self.head_st)
                if head == "cst":
                    head_module = JointHead(st, k)
                else:
                    rows = slice(0, k) if head == "cs" else slice(k, 2 * k)
                    head_module = nn.Linear(st.in_features, k)
                    with torch.no_grad():
                        head_module.weight.copy_(st.weight[rows])
                        head_module.bias.copy_(st.bias[rows])
        finally:
            self.set_config(previous)
        net = ExtractedNet(backbone, head_module)
        net.train(self.training)
        return net

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


def save_bank(bank: ModelBank, path: str | os.PathLike, **metadata: object) -> None:
    """Write ``bank.pt`` atomically: weights, width space, and plain metadata (class names, preprocessing)."""
    payload = {
        "format": BANK_FORMAT,
        "version": BANK_FORMAT_VERSION,
        "bank": bank.describe(),
        "state_dict": {k: v.detach().cpu() for k, v in bank.state_dict().items()},
        "metadata": metadata,
    }
    atomic_torch_save(payload, path)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    from slimda.tables import atomic_output

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_bank(path: str | os.PathLike) -> tuple[ModelBank, dict]:
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
    return bank, dict(payload.get("metadata") or {})
