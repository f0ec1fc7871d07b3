"""How well a device repeats its own timings: the noise floor under every latency table's predictions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

NOISY_BELOW = 0.9  # the target share within ±10 %: a device less repeatable than this cannot reach it


@dataclass(frozen=True)
class RoundNoise:
    """How much the same whole network's timings differ between the rounds of a build: the noise floor.

    ``repeatable`` is the share of networks whose every round lies within ±10 % of their median; no table can
    predict latencies to ±10 % more often than the device repeats its own timings that closely.
    ``spread`` is the median over networks of (slowest round / fastest round − 1)."""

    networks: int
    repeatable: float
    spread: float

    @staticmethod
    def repeats(rounds: Sequence[float]) -> bool:
        """Whether every round lies within ±10 % of the median round."""
        v = np.asarray(rounds, dtype=float)
        return bool(np.all(np.abs(v / np.median(v) - 1) <= 0.1))

    @classmethod
    def of(cls, rounds: Iterable[Sequence[float]]) -> RoundNoise:
        repeated = [np.asarray(v, dtype=float) for v in rounds if len(v) > 1]
        if not repeated:
            return cls(0, float("nan"), float("nan"))
        close = [cls.repeats(v) for v in repeated]
        return cls(len(repeated), float(np.mean(close)), float(np.median([v.max() / v.min() - 1 for v in repeated])))

    @property
    def noisy(self) -> bool:
        return self.networks > 0 and self.repeatable < NOISY_BELOW

    def text(self) -> str:
        if not self.networks:
            return "no network was timed twice, so the device's repeatability is unknown"
        return (f"{100 * self.repeatable:.0f} % of {self.networks} networks timed within ±10 % in every round "
                f"(median spread between rounds {100 * self.spread:.1f} %)")

    def advice(self, device: str) -> str:
        """What a user should do about a noisy device (empty when it is quiet enough)."""
        if not self.noisy:
            return ""
        return (f"warning: {device} does not repeat its own timings: {self.text()}. No table can predict "
                "latencies closer than the device repeats them. Profile on an otherwise idle device with fixed "
                "clocks (on a Jetson: `sudo nvpmodel -m 0 && sudo jetson_clocks`), or time more rounds "
                "(--rounds) so that each network's median steadies.")

