"""The files of a run directory: which they are, the training log (appended as it goes, truncated on
resume), and the throughput and progress lines it reports."""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping
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


class Throughput:
    """Elapsed training seconds (over resumes), images per second since the last reading, ETA."""

    def __init__(self, step: int, elapsed_before: float, images_per_step: int) -> None:
        self.started, self.before, self.per_step = time.perf_counter(), elapsed_before, images_per_step
        self.last_step, self.last_time, self.first_step = step, self.started, step

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started

    def read(self, step: int) -> dict[str, float]:
        """``elapsed_s`` and ``images_per_s`` (since the previous read) for ``train_log.csv``."""
        now = time.perf_counter()
        rate = (step - self.last_step) * self.per_step / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        return {"elapsed_s": round(self.elapsed(), 3), "images_per_s": round(rate, 2)}

    def line(self, step: int, total: int, log: Mapping[str, float]) -> str:
        """A progress line for a log file: step, losses, images/s and ETA over this process's steps so far."""
        spent = time.perf_counter() - self.started
        per_step = spent / max(step - self.first_step, 1)
        eta = per_step * (total - step)
        return (f"step {step}/{total}  total {log['total']:.4f}  source_ce {log['source_ce_largest']:.4f}  "
                f"{self.per_step / per_step:.1f} img/s  elapsed {clock(self.elapsed())}  ETA {clock(eta)}")


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
