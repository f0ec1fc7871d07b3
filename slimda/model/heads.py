"""The test-time heads: the one place that knows what each head outputs.

A bank has SymNet's joint head (2K logits: Cs then Ct) and the OSTC head Ca (K logits). At test time a
sub-network answers with one of: ``ca`` (OSTC), ``cs`` / ``ct`` (the halves of the joint head) or ``cst``
(SymNet's joint prediction q_k = p_k + p_{k+K}, as log-probabilities). Scoring, extraction for export and
the deployment manifest all ask this module, never the head's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from slimda.errors import ConfigError


class BankOutput(NamedTuple):
    features: torch.Tensor  # [N, C]
    st_logits: torch.Tensor  # [N, 2K]: Cs then Ct
    a_logits: torch.Tensor  # [N, K]


def joint_log_probs(st_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log q_k with q_k = p_k + p_{k+K}, p the softmax over all 2K logits (SymNet's Cst prediction)."""
    probs = torch.softmax(st_logits, dim=1)
    return torch.log(probs[:, :num_classes] + probs[:, num_classes:] + 1e-12)


class JointHead(nn.Module):
    """Cst as a plain module for export: the 2K-way linear layer followed by SymNet's class merge."""

    def __init__(self, linear: nn.Linear, num_classes: int) -> None:
        super().__init__()
        self.linear = linear
        self.num_classes = num_classes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return joint_log_probs(self.linear(features), self.num_classes)


def _rows_of(linear: nn.Linear, rows: slice) -> nn.Linear:
    out = nn.Linear(linear.in_features, rows.stop - rows.start)
    with torch.no_grad():
        out.weight.copy_(linear.weight[rows])
        out.bias.copy_(linear.bias[rows])
    return out


@dataclass(frozen=True)
class Head:
    """One test-time head: its class scores from the bank's outputs, and the plain module that exports it.

    ``log_probs``: its scores are log-probabilities (``cst``), not logits; ``static`` builds the exported
    head from the extracted joint (2K) and Ca (K) linear layers.
    """

    name: str
    description: str
    scores: Callable[[BankOutput, int], torch.Tensor]
    static: Callable[[nn.Linear, nn.Linear, int], nn.Module]
    log_probs: bool = False

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, K]`` from this head's scores."""
        return scores.exp() if self.log_probs else torch.softmax(scores, dim=1)

    @property
    def output_text(self) -> str:
        """What the exported model's output is, for the manifest."""
        return "log-probabilities (apply exp for probabilities)" if self.log_probs else "logits"


_HEADS: dict[str, Head] = {h.name: h for h in (
    Head("ca", "OSTC's head, trained by SEED on target images",
         lambda out, k: out.a_logits, lambda st, a, k: a),
    Head("ct", "the target half of SymNet's joint head",
         lambda out, k: out.st_logits[:, k:], lambda st, a, k: _rows_of(st, slice(k, 2 * k))),
    Head("cs", "the source half of SymNet's joint head",
         lambda out, k: out.st_logits[:, :k], lambda st, a, k: _rows_of(st, slice(0, k))),
    Head("cst", "SymNet's joint prediction over both halves",
         lambda out, k: joint_log_probs(out.st_logits, k), lambda st, a, k: JointHead(st, k), log_probs=True),
)}
HEADS: tuple[str, ...] = tuple(_HEADS)


def get_head(name: str) -> Head:
    """The head called ``name``; an unknown name is a ``ConfigError`` listing the heads."""
    try:
        return _HEADS[name]
    except KeyError:
        raise ConfigError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}") from None
