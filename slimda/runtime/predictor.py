"""``load(DEPLOYMENT)``: a deployed model ready to classify image files, with no torch.

The deployment folder's ``manifest.json`` says which file to load, its SHA-256 (checked before loading: a
mismatch is corruption or tampering, and is refused), how to preprocess images (``Recipe``), the classes and
what the output is (logits, or log-probabilities for the ``cst`` head). The runtime is picked from the
artefact (``slimda.runtime.backends``: ONNX Runtime, OpenVINO or TensorRT).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slimda.errors import DataError, SlimdaError
from slimda.runtime.backends import Backend, import_runtime, kind_of, open_backend
from slimda.runtime.recipe import Recipe
from slimda.tables import sha256_file

MANIFEST = "manifest.json"


@dataclass
class Timings:
    """Seconds spent per stage, and the images each batch held (for per-image percentiles)."""

    preprocess: list[float] = field(default_factory=list)  # per batch
    inference: list[float] = field(default_factory=list)  # per batch
    images: list[int] = field(default_factory=list)  # per batch


class Predictor:
    """A loaded deployment: ``probabilities`` of arrays, ``predict`` of image files."""

    def __init__(self, manifest: dict, backend: Backend, folder: Path, model_file: Path) -> None:
        self.manifest, self.backend, self.folder, self.model_file = manifest, backend, folder, model_file
        self.recipe = Recipe(manifest["preprocess"])
        self.class_names = [str(c) for c in manifest["class_names"]]
        self.log_probs = str(manifest.get("output", "logits")).startswith("log-prob")
        self.timings = Timings()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, K]`` of preprocessed images ``[N, C, H, W]``, in the model's batch size
        (a fixed-batch model gets full batches, the last one padded and cut)."""
        fixed = self.backend.batch
        outputs = []
        step = fixed or max(1, len(images))
        for start in range(0, len(images), step):
            x = np.ascontiguousarray(images[start:start + step], dtype=np.float32)
            n = len(x)
            if fixed and n < fixed:
                x = np.concatenate([x, np.repeat(x[-1:], fixed - n, axis=0)])
            outputs.append(np.asarray(self.backend.run(x), dtype=np.float64)[:n])
        scores = np.concatenate(outputs)
        if self.log_probs:
            return np.exp(scores)
        scores = np.exp(scores - scores.max(1, keepdims=True))
        return scores / scores.sum(1, keepdims=True)

    def predict(self, files: Iterable[Path], batch: int = 1) -> Iterator[tuple[Path, np.ndarray | None, str]]:
        """``(file, probabilities or None, error)`` per image file, ``batch`` images per forward pass; an image
        that cannot be read gets None and the reason, and the others are still predicted."""
        pending: list[tuple[Path, np.ndarray]] = []
        seconds = 0.0  # preprocessing of the pending batch
        for path in files:
            started = time.perf_counter()
            try:
                pending.append((path, self.recipe(path)))
            except DataError as err:
                yield path, None, str(err)
            seconds += time.perf_counter() - started
            if len(pending) == batch:
                yield from self._flush(pending, seconds)
                pending, seconds = [], 0.0
        if pending:
            yield from self._flush(pending, seconds)

    def _flush(self, pending: list[tuple[Path, np.ndarray]], seconds: float) -> Iterator[tuple[Path, np.ndarray, str]]:
        started = time.perf_counter()
        probs = self.probabilities(np.stack([x for _, x in pending]))
        self.timings.inference.append(time.perf_counter() - started)
        self.timings.preprocess.append(seconds)
        self.timings.images.append(len(pending))
        for (path, _), p in zip(pending, probs):
            yield path, p, ""


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise SlimdaError(f"no {MANIFEST} in {folder}: give a deployment folder written by slimda deploy")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SlimdaError(f"{path} cannot be read as JSON: {err}") from None
    missing = [k for k in ("preprocess", "class_names", "artifact", "files") if k not in data]
    if missing:
        raise SlimdaError(f"{path} lacks {', '.join(missing)}: it was not written by slimda deploy")
    return data


def verify(folder: Path, manifest: dict, names: Sequence[str]) -> None:
    """Every file in ``names`` exists and has the SHA-256 the manifest records for it."""
    records = manifest["files"]
    for name in names:
        path = folder / name
        if not path.is_file():
            raise SlimdaError(f"{path} is missing: the deployment folder is incomplete (deploy again, or copy it "
                              "whole)")
        expected = (records.get(name) or {}).get("sha256")
        if expected is None:
            raise SlimdaError(f"{MANIFEST} records no SHA-256 for {name}: only files the deployment wrote are loaded")
        if sha256_file(path) != expected:
            raise SlimdaError(f"{path} does not match the SHA-256 in {MANIFEST}: it was changed or corrupted since "
                              "it was deployed, and is refused")


def embedded_manifest(path: Path) -> dict:
    """The recipe a model file carries itself (``slimda_recipe`` in the ONNX ``metadata_props`` or the IR's
    ``rt_info`` ``model_info``), shaped as the manifest fields ``load`` needs."""
    kind = kind_of(path)
    text = None
    if kind in ("onnx", "ort"):
        ort = import_runtime("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        text = session.get_modelmeta().custom_metadata_map.get("slimda_recipe")
    elif kind == "openvino-ir":
        model = import_runtime("openvino").Core().read_model(str(path))
        if model.has_rt_info(["model_info", "slimda_recipe"]):
            text = model.get_rt_info(["model_info", "slimda_recipe"]).astype(str)
    if not text:
        raise SlimdaError(f"{path} has no manifest.json beside it and carries no slimda recipe in its metadata: "
                          "give the deployment folder written by slimda deploy")
    recipe = json.loads(text)
    return {**recipe, "artifact": {"kind": kind, "file": path.name}, "files": {}}


def load(path: str | Path, model: str | None = None, threads: int | None = None) -> Predictor:
    """A deployment folder (or a model file inside one) ready to predict. ``model``: another model file the
    deployment holds (e.g. ``model.onnx`` beside an engine); default: the artefact the manifest names. A model
    file without a manifest beside it is fed by the recipe in its own metadata (its SHA-256 is then not
    checked: nothing records it)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise SlimdaError(f"{path} does not exist: give a deployment folder written by slimda deploy")
    if not (folder / MANIFEST).is_file():  # the recipe the model file carries itself
        if path.is_dir():
            candidates = [folder / n for n in ("model.xml", "model.ort", "model.onnx") if (folder / n).is_file()]
            if not candidates:
                raise SlimdaError(f"no {MANIFEST} and no model file (model.xml, model.ort, model.onnx) in {folder}: "
                                  "give a deployment folder written by slimda deploy")
            path = candidates[0]
        manifest = embedded_manifest(path)
        backend = open_backend(manifest["artifact"]["kind"], path, threads, str(manifest.get("precision", "fp32")))
        return Predictor(manifest, backend, folder, path)
    manifest = read_manifest(folder)
    artifact = manifest["artifact"]
    name = model or (path.name if path.is_file() else str(artifact["file"]))
    kind = str(artifact["kind"]) if name == artifact["file"] else kind_of(Path(name))
    files = [name] + ([str(Path(name).with_suffix(".bin"))] if kind == "openvino-ir" else [])
    verify(folder, manifest, files)
    precision = str(manifest.get("precision") or "fp32")
    built = {k: v for k, v in artifact.items() if k not in ("kind", "file")} if name == artifact["file"] else None
    backend = open_backend(kind, folder / name, threads, precision, built)
    return Predictor(manifest, backend, folder, folder / name)

