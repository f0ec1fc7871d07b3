"""The files of a run directory: which they are, the training log (appended as it goes, truncated on
resume), and atomic checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

from slimda.tables import write_csv_atomic

RUN_FILES = ("config.json", "checkpoint.pt", "bank.pt", "train_log.csv", "eval.csv")


def append_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (a resumed run re-logs the steps after its checkpoint)."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if int(r["step"]) <= step]
    if kept:
        write_csv_atomic(path, kept)
    else:
        path.unlink()
