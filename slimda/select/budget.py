"""Deployment budgets: latency on a device, FLOPs or parameters, parsed from what users type."""

from __future__ import annotations

import re
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

    def allows(self, cost: float) -> bool:
        return cost <= self.value


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


def parse_count(text: str, kind: str) -> Budget:
    """``300M``, ``1.2G``, ``1.2GFLOPs``, ``5e8`` (FLOPs) or ``2.5M``, ``800k`` (parameters) → a count."""
    suffix = "flops?" if kind == "flops" else "params?"
    m = re.fullmatch(rf"\s*{_NUMBER}\s*([kmg]?)\s*(?:{suffix})?\s*", text.strip().lower())
    if not m or _number(m) <= 0:
        example = "300M, 1.2G or 1.2GFLOPs" if kind == "flops" else "2.5M or 800k"
        raise ConfigError(f"cannot read {kind} budget {text!r}: write a positive count such as {example}")
    return Budget(kind, _number(m) * _COUNT_UNITS[m.group(3)], text.strip())
