"""Validating a latency table: held-out random sub-networks timed end to end against its predictions.

The share predicted within ±10 %, RMSE and rank correlation are what DESIGN §2.4 reports; how the table is
built: slimda.latency.build.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from slimda.console import one_torch_thread, progress_bar
from slimda.latency.build import VALIDATION_SEED_OFFSET, Entry, Exporter, bank_for, pairs_here, time_entry
from slimda.latency.plan import NetPlan
from slimda.latency.noise import RoundNoise
from slimda.latency.table import WHOLE, LatencyTable, is_ok_row, row_latency
from slimda.model.bank import ModelBank
from slimda.model.space import WidthConfig, WidthSpace
from slimda.profilers.devices import DeviceProfile, get_device
from slimda.profilers.measurement import MeasureOptions


@dataclass(frozen=True)
class ValidationReport:
    """Predicted vs measured latency of held-out random configurations (measured: median of rounds).

    On a paired table the held-out networks are timed paired with the table's reference too, and "measured"
    is their ratio to it × the table's reference latency; ``within_10_raw`` scores the raw medians instead,
    which carry whatever the machine's speed did meanwhile (the same number on an unpaired table)."""

    rows: list[dict[str, object]]
    within_10: float
    rmse_ms: float
    spearman: float
    count: int
    with_fallback: int
    repeatable: float  # share of networks whose every round lies within ±10 % of their median: the noise floor
    drift: float  # the reference (or uniform) networks now / in the table, median: how far the device moved
    within_10_raw: float
    paired: bool

    def text(self) -> str:
        measured = "paired with the table's reference" if self.paired else "unpaired"
        raw = f" ({100 * self.within_10_raw:.1f} % against raw medians)" if self.paired else ""
        return (f"{self.count} held-out configurations, timed {measured}: {100 * self.within_10:.1f} % within "
                f"±10 %{raw}, RMSE {self.rmse_ms:.4f} ms, Spearman ρ {self.spearman:.3f}; {self.with_fallback} "
                f"used the per-slot regression for unseen blocks; measurement repeatability "
                f"{100 * self.repeatable:.0f} % (rounds within ±10 % of their median); the device runs "
                f"{100 * (self.drift - 1):+.1f} % against the table")


def accuracy(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float, float]:
    """(share within ±10 % of measured, RMSE in ms, Spearman ρ)."""
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if len(p) == 0:
        return float("nan"), float("nan"), float("nan")
    within = float(np.mean(np.abs(p - m) <= 0.1 * m))
    rmse = float(np.sqrt(np.mean((p - m) ** 2)))
    rho = float(spearmanr(p, m).statistic) if len(p) > 2 else float("nan")
    return within, rmse, rho


def validation_configs(space: WidthSpace, table: LatencyTable, count: int, seed: int = 0) -> list[WidthConfig]:
    """``count`` random configurations outside the table's uniform and fit-set networks."""
    exclude = [table.config(i) for i in table.uniform_ids | table.fit_ids]
    return space.sample_many(count, seed + VALIDATION_SEED_OFFSET, exclude=exclude)


def measure_configs(bank: ModelBank, plan: NetPlan, configs: Sequence[WidthConfig], device: str | DeviceProfile,
                    options: MeasureOptions | None, rounds: int = 3, progress: bool | None = None,
                    reference: WidthConfig | None = None) -> dict[str, list[dict[str, object]]]:
    """Time whole networks end to end in ``rounds`` interleaved rounds (paired with ``reference`` if given):
    {config id: its rows}."""
    dev = get_device(device)
    opts = replace(options or MeasureOptions(), resolution=None)
    out: dict[str, list[dict[str, object]]] = {c.id: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="slimda-lut-val-") as tmp, \
            progress_bar(rounds * len(configs), "validation", "run", progress) as bar, one_torch_thread():
        exporter = Exporter(bank, plan, dev, Path(tmp), reference, opts.precision_for(dev))
        for r in range(rounds):
            for config in configs:
                out[config.id].append(time_entry(Entry(WHOLE, config.id, config, round=r), exporter, opts,
                                                  last_use=r == rounds - 1))
                bar.update(1)
    return out


def validate_table(table: LatencyTable, bank_or_space: ModelBank | WidthSpace, device: str | DeviceProfile,
                   options: MeasureOptions | None, count: int, out_csv: str | os.PathLike | None = None, *,
                   seed: int = 0, rounds: int = 3, progress: bool | None = None) -> ValidationReport:
    """Time ``count`` held-out configurations end to end (median of ``rounds``) against the predictions.

    A paired table's reference is timed with every network, so ``drift`` (how much faster or slower the
    device runs now than during the build: a shared machine's load, thermal state...) comes free; an
    unpaired table's uniform-width networks are timed again in the same rounds for it."""
    from slimda.tables import write_csv_atomic

    bank = bank_for(bank_or_space, table.input_shape[1], table.num_classes)
    space = bank.space if isinstance(bank_or_space, ModelBank) else bank_or_space
    configs = validation_configs(space, table, count, seed)
    paired = pairs_here(table, device, options)
    reference = table.config(table.reference_id) if paired else None
    anchors = [] if paired else [table.config(i) for i in sorted(table.uniform_ids) if i in table.whole_ms]
    measured = measure_configs(bank, table.plan, configs + anchors, device, options, rounds, progress, reference)
    if paired:
        now = [float(r["reference_ms"]) / table.reference_ms  # type: ignore[arg-type, operator]
               for c in configs for r in measured[c.id] if is_ok_row(r)]
    else:
        now = [np.median([float(r["latency_ms_p50"]) for r in measured[a.id] if is_ok_row(r)]) / table.whole_ms[a.id]
               for a in anchors if any(is_ok_row(r) for r in measured[a.id])]
    rows: list[dict[str, object]] = []
    repeatable = []
    for config in configs:
        pred = table.explain(config)
        ok = [r for r in measured[config.id] if is_ok_row(r)]
        values = [row_latency(r, table.reference_ms) for r in ok]
        raw = [float(r["latency_ms_p50"]) for r in ok]  # type: ignore[arg-type]
        errors = [str(r["error"]) for r in measured[config.id] if r.get("status") != "ok"]
        ms = float(np.median(values)) if values else None
        raw_ms = float(np.median(raw)) if raw else None
        if values:
            repeatable.append(RoundNoise.repeats(values))
        rows.append({"config_id": config.id, "predicted_ms": round(pred.latency_ms, 6),
                     "measured_ms": "" if ms is None else round(ms, 6),
                     "error_pct": "" if ms is None else round(100 * (pred.latency_ms / ms - 1), 2),
                     "measured_raw_ms": "" if raw_ms is None else round(raw_ms, 6),
                     "error_raw_pct": "" if raw_ms is None else round(100 * (pred.latency_ms / raw_ms - 1), 2),
                     "fallback_blocks": pred.fallback_blocks, "source": pred.source, "rounds": len(values),
                     "round_ms": " ".join(f"{v:.4f}" for v in values),
                     "round_raw_ms": " ".join(f"{v:.4f}" for v in raw),
                     "status": "ok" if values else "failed", "error": errors[0] if errors else ""})
    good = [r for r in rows if r["status"] == "ok"]
    predicted = [float(r["predicted_ms"]) for r in good]  # type: ignore[arg-type]
    within, rmse, rho = accuracy(predicted, [float(r["measured_ms"]) for r in good])  # type: ignore[arg-type]
    within_raw, _, _ = accuracy(predicted, [float(r["measured_raw_ms"]) for r in good])  # type: ignore[arg-type]
    if out_csv is not None and rows:
        write_csv_atomic(out_csv, rows)
    return ValidationReport(rows, within, rmse, rho, len(good), sum(1 for r in good if r["fallback_blocks"]),
                            float(np.mean(repeatable)) if repeatable else float("nan"),
                            float(np.median(now)) if now else float("nan"), within_raw, paired)
