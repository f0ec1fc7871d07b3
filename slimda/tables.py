"""Printing and writing flat tables (CSV with units in column names, or aligned text for a terminal)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Aligned plain-text table of ``rows`` (columns from the first row)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def print_table(rows: Sequence[Mapping[str, object]], csv_format: bool = False, file: TextIO | None = None) -> None:
    out = file or sys.stdout
    if csv_format:
        out.write(to_csv(rows))
    else:
        print(format_table(rows), file=out)


def to_csv(rows: Sequence[Mapping[str, object]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds and
    removed when it fails, so readers never see half a file. The temporary name keeps the suffix, for tools
    that pick a format by it (matplotlib's savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` through a temporary file and a rename: readers never see half a file."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[Mapping[str, object]]) -> Path:
    return write_text_atomic(path, to_csv(rows))


def write_json_atomic(path: str | os.PathLike, data: object) -> Path:
    import json

    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
