"""A few labels, a valid interval: target images picked for a person to label, and the accuracy they give.

Where the label-free estimate cannot be trusted (or is not enough), ``slimda deploy --label-budget N`` picks N
of the scored target images at random and writes them to ``DIR/<device>/labels/`` with a ``labels.csv`` to fill
in. ``slimda label-estimate DIR/<device>`` then reads the labels back and combines them with the deployed
model's predictions on every scored image (prediction-powered inference, Angelopoulos et al., Science 2023: the
unlabelled images' predicted chance of being right, corrected by the labelled images' residuals), which gives a
90 % interval that holds whatever the shift and is narrower than the labels' own wherever the predictions track
correctness (``slimda.select.estimate.ppi_mean``; benchmarks/accuracy_estimation.py measures both). The
predictions are those of the model file that ships (``model.onnx``, run by ONNX Runtime), so an int8 model is
judged as quantized.

Files in ``labels/``: ``images/NNNN.<ext>`` (the picked images as they came), ``labels.csv`` (columns
``image,label``; write each image's class name), ``request.json`` (what the estimate needs later) and, once
labelled, ``estimate.json``; the manifest gets ``labelled_target_accuracy``.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from slimda.errors import ConfigError, DataError
from slimda.select.estimate import labelled_estimate, pick_to_label, predicted_correct
from slimda.tables import write_csv_atomic, write_json_atomic

LABELS_DIR = "labels"
LABELS_CSV = "labels.csv"
REQUEST_JSON = "request.json"
ESTIMATE_JSON = "estimate.json"
MANIFEST_KEY = "labelled_target_accuracy"


def write_label_request(folder: Path, probs: np.ndarray, domain, scored: tuple[int, ...],
                        class_names: list[str], temperature: float, budget: int, seed: int = 0) -> Path:
    """``budget`` of the scored images (``scored``: their indices in ``domain``; ``probs``: the deployed model's
    class probabilities on them) written to ``folder/labels/`` for labelling; returns that folder."""
    from PIL import Image

    if not 0 < budget <= len(probs):
        raise ConfigError(f"--label-budget must be between 1 and the {len(probs)} scored target images, got {budget}")
    out = folder / LABELS_DIR
    (out / "images").mkdir(parents=True, exist_ok=True)
    picked = pick_to_label(probs, budget, seed)
    names, originals = [], []
    for j, k in enumerate(picked):
        original = domain.original(scored[k])
        if isinstance(original, Path):
            name = f"{j:04d}{original.suffix.lower()}"
            shutil.copyfile(original, out / "images" / name)
        else:
            name = f"{j:04d}.png"
            Image.fromarray(np.asarray(original)).save(out / "images" / name)
        names.append(name)
        originals.append(str(original) if isinstance(original, Path) else f"{domain.name}[{scored[k]}]")
    write_csv_atomic(out / LABELS_CSV, [{"image": n, "label": ""} for n in names])
    predicted = predicted_correct(probs, temperature)
    write_json_atomic(out / REQUEST_JSON, {
        "what": "fill in labels.csv (each image's class name, one of class_names), then run "
                f"`slimda label-estimate {folder}`",
        "class_names": list(class_names), "images": names, "originals": originals,
        "picked": [int(k) for k in picked],
        "predicted_class": [int(c) for c in probs.argmax(1)],
        "predicted_correct": [round(float(f), 6) for f in predicted], "temperature": temperature,
        "scored_images": len(probs), "seed": seed})
    return out


def read_labels(folder: Path) -> dict:
    """The accuracy estimate from a filled-in ``labels.csv`` (``folder``: the deployment's folder or its
    ``labels/``); writes ``estimate.json`` and the manifest's ``labelled_target_accuracy``. Missing, unknown or
    partial labels are a ``DataError`` naming the rows: every picked image must be labelled, or the sample is
    no longer the one that was drawn."""
    folder = Path(folder)
    out = folder if (folder / REQUEST_JSON).is_file() else folder / LABELS_DIR
    if not (out / REQUEST_JSON).is_file():
        raise DataError(f"no label request in {folder}: deploy with --label-budget N first")
    request = json.loads((out / REQUEST_JSON).read_text())
    classes = {name: i for i, name in enumerate(request["class_names"])}
    with (out / LABELS_CSV).open(newline="") as fh:
        rows = {r.get("image", ""): (r.get("label") or "").strip() for r in csv.DictReader(fh)}
    missing = [n for n in request["images"] if not rows.get(n)]
    if missing:
        raise DataError(f"{len(missing)} of the {len(request['images'])} images in {out / LABELS_CSV} have no label "
                        f"(first: {missing[0]}): write each image's class in the label column, one of "
                        f"{', '.join(classes)}; every picked image must be labelled for the interval to hold")
    unknown = sorted({rows[n] for n in request["images"]} - set(classes))
    if unknown:
        raise DataError(f"{out / LABELS_CSV} has labels that are not classes of the model: {unknown}; the classes "
                        f"are {', '.join(classes)}")
    picked = np.asarray(request["picked"], int)
    predicted_class = np.asarray(request["predicted_class"], int)
    observed = np.array([classes[rows[n]] for n in request["images"]]) == predicted_class[picked]
    found, method = labelled_estimate(np.asarray(request["predicted_correct"]), picked, observed.astype(float))
    result = {"value": round(found.estimate, 5), "low": round(found.low, 5), "high": round(found.high, 5),
              "confidence": 0.9, "method": method, "labels": found.labels, "unlabelled": found.unlabelled,
              "labelled_accuracy": round(float(observed.mean()), 5)}
    write_json_atomic(out / ESTIMATE_JSON, result)
    manifest = out.parent / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        data[MANIFEST_KEY] = result
        write_json_atomic(manifest, data)
    return result
