"""What a deployment leaves on disk besides its model: the report row, the latency part of its manifest, and
the folder swapped in atomically.

``DIR/deploy_report.csv`` gets one row per deployment (rewritten atomically, never a half-written line);
``DIR/<device>/`` is built in a scratch folder beside it and replaces it only when complete.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slimda.export.manifest import LatencyRecord, Manifest
from slimda.select.budget import Budgets
from slimda.tables import write_csv_atomic

if TYPE_CHECKING:
    from slimda.latency.build import TableScaleLatency

REPORT_NAME = "deploy_report.csv"
REPORT_COLUMNS: tuple[str, ...] = (
    "deployed_at", "device", "budget", "precision", "config_id", "width", "predicted_latency_ms", "measured_latency_ms",
    "measured_latency_ms_raw", "measured_latency_ms_p90", "within_budget", "upem", "target_acc", "flops_m",
    "params_m", "attempts", "candidates_scored", "search_seconds", "deploy_seconds", "artifact", "dir",
)


def report_row(m: Manifest) -> dict[str, object]:
    """The ``deploy_report.csv`` row of one deployment (absent values as empty cells)."""
    lat, run = m.latency, m.provenance
    return {
        "deployed_at": run.deployed_at, "device": m.device, "budget": m.budget.text("; "),
        "precision": _blank(m.precision.precision),
        "config_id": m.network.config_id, "width": m.network.width,
        "predicted_latency_ms": _blank(lat.predicted_ms), "measured_latency_ms": _blank(lat.measured_ms),
        "measured_latency_ms_raw": _blank(lat.measured_ms_raw), "measured_latency_ms_p90": _blank(lat.measured_ms_p90),
        "within_budget": _blank(lat.within_budget), "upem": m.scores.upem, "target_acc": _blank(m.scores.target_acc),
        "flops_m": m.network.flops_m, "params_m": m.network.params_m, "attempts": len(run.attempts),
        "candidates_scored": run.search.candidates_scored, "search_seconds": run.search.seconds,
        "deploy_seconds": run.deploy_seconds, "artifact": m.artefact.file, "dir": run.dir,
    }


def latency_record(budgets: Budgets, measured: TableScaleLatency | None, predicted: float | None,
                   tolerance: float) -> LatencyRecord:
    """Predicted vs measured latency, and the budget's verdict on the measurement (``Budgets.latency_met``)."""
    raw = measured.measurement if measured else None
    return LatencyRecord(
        round_or_none(predicted), round_or_none(measured.latency_ms if measured else None),
        round_or_none(raw.stats.p50 if raw else None), round_or_none(raw.stats.p90 if raw else None),
        measured.method if measured else None,
        round_or_none(measured.device_speed if measured else None, 4), raw.to_row() if raw else None,
        budgets.latency_met(measured.latency_ms if measured else None, tolerance), tolerance,
        raw.timed_file or None if raw else None, raw.timed_sha256 or None if raw else None)


def round_or_none(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits``, None kept (the manifest's and report's numbers)."""
    return None if value is None else round(float(value), digits)


def _blank(value: object) -> object:
    return "" if value is None else value


def append_report(path: Path, row: dict[str, object]) -> None:
    """Append one row to the deployment report, rewriting it atomically (never a half-written line)."""
    rows: list[dict[str, object]] = []
    if path.is_file():
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    rows.append(row)
    write_csv_atomic(path, [{c: r.get(c, "") for c in REPORT_COLUMNS} for r in rows])


@dataclass
class Stage:
    """A scratch folder of ``staging``; clear ``commit`` to throw it away instead of swapping it in."""

    path: Path
    commit: bool = True


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Stage]:
    """A scratch folder beside ``final`` that replaces it when the block ends with ``stage.commit`` set,
    and is removed otherwise: ``final`` is always the previous deployment or the complete new one."""
    stage = Stage(final.parent / f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(stage.path, ignore_errors=True)
    stage.path.mkdir(parents=True)
    try:
        yield stage
        if stage.commit:
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            if final.exists():
                os.replace(final, old)
            os.replace(stage.path, final)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage.path, ignore_errors=True)
