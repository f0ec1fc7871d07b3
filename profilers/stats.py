"""Latency statistics and the measurement loop every local runtime shares.

``LatencyStats`` is what a measurement reports (milliseconds): median, p90, p99, mean, std, coefficient of
variation and the number of timed runs. Tools that print only a summary (trtexec, onnxruntime_perf_test)
fill what they print and leave the rest ``None``. ``timed_runs`` warms up, then runs until both a minimum
number of runs and a minimum time are reached, bounded so a slow model can never loop forever.
``paired_runs`` times a model against a reference model in alternating short chunks: on a machine whose
speed wanders (a shared host, unlocked clocks) their ratio stays steady where each latency alone does not.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from slimda.errors import ConfigError


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model on one device, in milliseconds. ``cv`` is std / mean (a ratio, not percent)."""

    p50: float
    mean: float
    runs: int
    p90: float | None = None
    p99: float | None = None
    std: float | None = None
    cv: float | None = None
    min: float | None = None
    max: float | None = None

    @property
    def median(self) -> float:
        return self.p50

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencyStats:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linear interpolation (numpy's default)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def compute_stats(latencies_ms: Sequence[float]) -> LatencyStats:
    """Statistics of per-run latencies in milliseconds (population std; cv = std / mean)."""
    values = sorted(float(v) for v in latencies_ms)
    if not values:
        raise ValueError("no latencies to summarise")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return LatencyStats(
        p50=percentile(values, 50), p90=percentile(values, 90), p99=percentile(values, 99),
        mean=mean, std=std, cv=std / mean if mean > 0 else None, runs=n, min=values[0], max=values[-1],
    )


@dataclass(frozen=True)
class LoopLimits:
    """When the loop stops: after ``min_runs`` *and* ``min_time_s``, or at ``max_runs`` / ``max_time_s``."""

    warmup: int = 10
    min_runs: int = 50
    min_time_s: float = 1.0
    max_runs: int = 1_000_000
    max_time_s: float = 60.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_runs < 1 or self.min_time_s < 0:
            raise ConfigError(f"bad measurement limits {self}: warmup >= 0, min_runs >= 1, min_time >= 0")
        if self.max_runs < self.min_runs:
            raise ConfigError(f"max_runs ({self.max_runs}) is below min_runs ({self.min_runs})")


def timed_runs(run_once: Callable[[], object], limits: LoopLimits) -> tuple[list[float], bool]:
    """Call ``run_once`` for ``limits.warmup`` untimed runs, then time each call (perf_counter, ms).

    Returns the latencies and whether both minimums were met (False when a maximum stopped the loop first,
    e.g. a model slower than ``max_time_s / min_runs``).
    """
    for _ in range(limits.warmup):
        run_once()
    latencies: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        run_once()
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        if len(latencies) >= limits.min_runs and elapsed >= limits.min_time_s:
            return latencies, True
        if len(latencies) >= limits.max_runs or elapsed >= limits.max_time_s:
            return latencies, False


PAIR_CHUNK_S = 0.02  # each side of a pair runs this long before the other: shorter than the host's swings


@dataclass(frozen=True)
class PairedRuns:
    """A model and a reference timed in alternating chunks (ms). The first run of every chunk is left out
    (it finds the caches holding the other model); ``ratios`` holds one model / reference ratio of chunk
    medians per chunk pair, so each ratio compares the two under the same machine state."""

    latencies: list[float]
    reference: list[float]
    ratios: list[float]
    complete: bool

    @property
    def ratio(self) -> float:
        """Median over chunk pairs of (model / reference): the model's latency in reference units."""
        return statistics.median(self.ratios)


def paired_runs(run_once: Callable[[], object], run_reference: Callable[[], object], limits: LoopLimits,
                chunk_s: float = PAIR_CHUNK_S, clock: Callable[[], int] = time.perf_counter_ns) -> PairedRuns:
    """Warm both up, then alternate chunks (the model, then the reference) of at least ``chunk_s`` seconds
    and 3 runs each, until the model's kept runs meet ``limits`` (its own time counts towards the minimum
    and maximum time; the reference's time comes on top). ``clock`` is in nanoseconds."""
    for _ in range(limits.warmup):
        run_once()
        run_reference()
    latencies: list[float] = []
    reference: list[float] = []
    ratios: list[float] = []
    spent = 0.0

    def chunk(run: Callable[[], object]) -> list[float]:
        times: list[float] = []
        start = clock()
        while len(times) < 3 or clock() - start < chunk_s * 1e9:
            t0 = clock()
            run()
            times.append((clock() - t0) / 1e6)
        return times[1:]

    while True:
        ours = chunk(run_once)
        theirs = chunk(run_reference)
        latencies += ours
        reference += theirs
        ratios.append(statistics.median(ours) / statistics.median(theirs))
        spent += sum(ours) / 1e3
        if len(latencies) >= limits.min_runs and spent >= limits.min_time_s:
            return PairedRuns(latencies, reference, ratios, True)
        if len(latencies) >= limits.max_runs or spent >= limits.max_time_s:
            return PairedRuns(latencies, reference, ratios, False)
