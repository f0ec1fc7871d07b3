"""What ``slimda predict`` reads and writes: the image files named on the command line, a CSV row per
prediction, the timing summary (as MLPerf reports a SingleStream latency and an Offline throughput) and, with
labels, the accuracy beside what the deployment expected and the confusion matrix. No torch."""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from slimda.data.decode import IMAGE_EXTENSIONS
from slimda.errors import DataError
from slimda.runtime.predictor import Predictor, Timings

# what training reads, and the netpbm files some device cameras write
IMAGE_SUFFIXES = IMAGE_EXTENSIONS | {".ppm", ".pgm"}


def image_files(specs: Sequence[str]) -> list[Path]:
    """Files, folders (searched recursively for images) and glob patterns, in the order given (each folder's
    files sorted); one that yields no image is a ``DataError`` naming it (a typo must not pass unnoticed)."""
    found: list[Path] = []
    empty = []
    for spec in specs:
        path = Path(spec)
        matches = [Path(m) for m in sorted(glob.glob(spec, recursive=True))] if not path.exists() else [path]
        before = len(found)
        for match in matches:
            if match.is_dir():
                found += sorted(p for p in match.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                                and not p.name.startswith("."))
            elif match.is_file():
                found.append(match)
        if len(found) == before:
            empty.append(spec)
    if empty:
        raise DataError(f"no image files in {', '.join(empty)} (no such file, an empty folder or a pattern that "
                        f"matches nothing; folders are searched recursively for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return list(dict.fromkeys(found))


def prediction_row(path: Path, probs: np.ndarray, class_names: Sequence[str], top_k: int,
                   label: str | None = None) -> dict[str, object]:
    values = probs.tolist()  # Python floats: formatting NumPy scalars costs more than the 28x28 model's run
    order = ranked(values)
    top = order[: min(top_k, len(values))]
    row: dict[str, object] = {"file": str(path), "class": class_names[top[0]], "probability": round(values[top[0]], 6),
                              "top_k": ";".join(f"{class_names[i]}:{values[i]:.4f}" for i in top)}
    if label is not None:
        row.update(label=label, correct=class_names[top[0]] == label,
                   in_top5=label in [class_names[i] for i in order[:5]])
    return row


def ranked(values: list[float]) -> list[int]:
    """Classes from the most to the least probable; ties keep the lower class first, as argmax does (a stable
    sort: Python's for a few classes, NumPy's for many)."""
    if len(values) <= 64:
        return sorted(range(len(values)), key=values.__getitem__, reverse=True)
    return np.argsort(-np.asarray(values), kind="stable").tolist()


def classify(predictor: Predictor, files: Sequence[Path], batch: int, top_k: int,
             labels: Mapping[Path, str] | None = None,
             on_image: Callable[[Path, np.ndarray | None, str], None] | None = None) -> tuple[list[dict], int]:
    """What ``slimda predict`` does per image: a CSV row of every readable image, in order, and the number
    that could not be read; ``on_image(file, probabilities or None, error)`` sees each image as it is done."""
    rows, failed = [], 0
    for path, probs, error in predictor.predict(files, batch):
        if probs is None:
            failed += 1
        else:
            rows.append(prediction_row(path, probs, predictor.class_names, top_k,
                                       None if labels is None else labels[path]))
        if on_image:
            on_image(path, probs, error)
    return rows, failed


def _percentiles(per_image_ms: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(per_image_ms, [50, 90, 99])
    return f"p50 {p50:.3g} / p90 {p90:.3g} / p99 {p99:.3g} ms"


def timing_summary(timings: Timings, images: int, seconds: float, runtime: str) -> str:
    """Images/s over the whole run, and per-image preprocessing and inference times (each batch's time over its
    images: at batch 1 the single-image latency, at larger batches the per-image share of a batch)."""
    if not timings.images:
        return "no image was predicted"
    counts = np.asarray(timings.images, float)
    prep = 1e3 * np.asarray(timings.preprocess) / counts
    infer = 1e3 * np.asarray(timings.inference) / counts
    return (f"{images} images in {seconds:.2f} s ({images / seconds:.1f} images/s, {runtime}); per image: "
            f"preprocessing {_percentiles(prep)}, inference {_percentiles(infer)}")


def accuracy_report(rows: Sequence[Mapping[str, object]], class_names: Sequence[str],
                    manifest: Mapping[str, object]) -> tuple[list[dict], list[dict]]:
    """Top-1 and top-5 accuracy beside what the manifest expected, and the confusion matrix (rows: the true
    class, columns: the predicted one)."""
    top1 = float(np.mean([bool(r["correct"]) for r in rows]))
    top5 = float(np.mean([bool(r["in_top5"]) for r in rows]))
    estimate = manifest.get("estimated_target_accuracy") or {}
    report = [{"images": len(rows), "top1": round(top1, 5), "top5": round(top5, 5),
               "deploy_estimate": estimate.get("value", ""), "deploy_estimate_low": estimate.get("low", ""),
               "deploy_estimate_high": estimate.get("high", ""), "deploy_estimate_verdict": estimate.get("verdict", ""),
               "deploy_target_acc": manifest.get("target_acc") if manifest.get("target_acc") is not None else ""}]
    index = {c: i for i, c in enumerate(class_names)}
    counts = np.zeros((len(class_names), len(class_names)), int)
    for r in rows:
        counts[index[str(r["label"])], index[str(r["class"])]] += 1
    confusion = [{"true": c, **{p: int(counts[i, j]) for j, p in enumerate(class_names)}}
                 for i, c in enumerate(class_names)]
    return report, confusion
