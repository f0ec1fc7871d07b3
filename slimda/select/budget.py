"""Deployment budgets: latency on a device, FLOPs or parameters, parsed from what users type.

``Budget.allows`` is the one rule for "within budget": the deployer's retry decision, its over-budget warning
and the manifest's ``within_budget`` all ask it, with the same tolerance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from slimda.errors import ConfigError

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?"
_LATENCY_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_COUNT_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Budget:
    """A limit on one cost: ``kind`` is ``latency`` (value in ms), ``flops`` or ``params`` (plain counts)."""

    kind: str
    value: float
    text: str

    def __str__(self) -> str:
        return self.text

    def allows(self, cost: float, tolerance: float = 0.0) -> bool:
        """Whether ``cost`` meets the budget; ``tolerance`` is the share it may exceed it by (0.05: 5 %)."""
        return cost <= self.value * (1 + tolerance)


_UNITS = {"latency": "ms", "flops": "FLOPs", "params": "parameters"}


@dataclass(frozen=True)
class Budgets:
    """The limits one deployment must meet (at least one of them)."""

    latency: Budget | None = None
    flops: Budget | None = None
    params: Budget | None = None

    def __post_init__(self) -> None:
        if not (self.latency or self.flops or self.params):
            raise ConfigError("give at least one budget: --latency 20ms, --flops 300M or --params 2.5M")

    def given(self) -> tuple[Budget, ...]:
        return tuple(b for b in (self.latency, self.flops, self.params) if b)

    def text(self, sep: str = ", ") -> str:
        """``latency 20ms; flops 300M`` with ``sep="; "`` (what reports and tables print)."""
        return sep.join(f"{b.kind} {b.text}" for b in self.given())

    def latency_met(self, measured_ms: float | None, tolerance: float = 0.0) -> bool | None:
        """Whether a measured latency meets the latency budget (``Budget.allows``); None when either is absent."""
        if self.latency is None or measured_ms is None:
            return None
        return self.latency.allows(measured_ms, tolerance)

    def to_dict(self) -> dict[str, dict[str, object]]:
        """``{kind: {"text", "value", "unit"}}``, as manifests store it."""
        return {b.kind: {"text": b.text, "value": b.value, "unit": _UNITS[b.kind]} for b in self.given()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, object]]) -> Budgets:
        """Inverse of ``to_dict``."""
        return cls(**{kind: Budget(kind, float(b["value"]), str(b["text"])) for kind, b in data.items()})


def _number(match: re.Match) -> float:
    value = float(match.group(1))
    return value * 10 ** int(match.group(2)) if match.group(2) else value


def parse_latency(text: str) -> Budget:
    """``20ms``, ``20 ms``, ``0.02s``, ``500us`` → milliseconds."""
    m = re.fullmatch(rf"\s*{_NUMBER}\s*(ms|s|us|µs)\s*", text.strip().lower())
    if not m or _number(m) <= 0:
        raise ConfigError(f"cannot read latency budget {text!r}: write a positive time with its unit, "
                          "such as 20ms, '20 ms', 0.02s or 500us")
    return Budget("latency", _number(m) * _LATENCY_UNITS[m.group(3)], text.strip())


def latency_budget(ms: float, digits: int = 3) -> Budget:
    """A latency budget of ``ms`` milliseconds rounded to ``digits`` significant digits, its text written
    from that same number (``0.123ms``), so that text and value agree in messages and manifests."""
    if not ms > 0:
        raise ConfigError(f"a latency budget must be positive, got {ms} ms")
    value = round(ms, digits - 1 - math.floor(math.log10(ms)))
    return Budget("latency", value, f"{value:.{digits}g}ms")


def parse_count(text: str, kind: str) -> Budget:
    """``300M``, ``1.2G``, ``1.2GFLOPs``, ``5e8`` (FLOPs) or ``2.5M``, ``800k`` (parameters) → a count."""
    suffix = "flops?" if kind == "flops" else "params?"
    m = re.fullmatch(rf"\s*{_NUMBER}\s*([kmg]?)\s*(?:{suffix})?\s*", text.strip().lower())
    if not m or _number(m) <= 0:
        example = "300M, 1.2G or 1.2GFLOPs" if kind == "flops" else "2.5M or 800k"
        raise ConfigError(f"cannot read {kind} budget {text!r}: write a positive count such as {example}")
    return Budget(kind, _number(m) * _COUNT_UNITS[m.group(3)], text.strip())
