"""``manifest.json`` of a deployment: what was chosen, why, how to feed it, and what produced it.

A user (or a fleet tool) reads the manifest to know the model's input (shape, channels, mean, std, class
names), its measured cost on the device, and checks the files against their SHA-256 before loading them.

``Manifest`` is the typed record, made of a few parts (the chosen network, its latency, its scores, the input
recipe, the artefact and its files, provenance); ``to_dict`` writes the JSON keys of ``MANIFEST_KEYS``, in
that order, and ``from_dict`` / ``read_manifest`` read them back.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from slimda.data.preprocessing import Preprocessing
from slimda.errors import SlimdaError
from slimda.select.budget import Budgets
from slimda.tables import sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
BATCH_AXIS = "batch"  # the symbolic first axis of a model exported with a dynamic batch
PIXEL_SCALE = "images scaled to [0, 1] before mean/std"
TARGET_ACC_NOTE = "labels of the target, read only for this report, never for the choice"

# Every key a manifest written by slimda-deploy holds, in the order it is written.
MANIFEST_KEYS: tuple[str, ...] = (
    "format", "config_id", "width", "widths", "arch", "device", "runtime", "budget",
    # latency: predicted by the table, re-measured on the device, and the verdict (with its tolerance)
    "predicted_latency_ms", "measured_latency_ms", "measured_latency_ms_raw", "measured_latency_ms_p90",
    "measurement_method", "device_speed_vs_table", "measurement", "within_budget", "latency_tolerance",
    "timed_file", "timed_sha256",  # the file that was timed: the artefact that ships
    "upem", "upem_distance", "selected_by", "target_acc", "target_acc_note",
    # estimated without target labels (slimda.select.estimate), with what the device needs to keep estimating
    "estimated_target_accuracy", "flops_m", "params_m", "head",
    # precision: what it runs in, how it was quantized, and the finalists of the width x precision search
    "precision", "upem_fp32", "quantization", "precision_candidates",
    # how to feed the model and read its output
    "input_name", "output_name", "output", "input_shape", "dynamic_batch", "latency_batch", "channels", "mean", "std",
    "input_size", "pixel_scale",
    "resize", "preprocess", "class_names",
    # the files and what produced them
    "opset", "onnx_parity", "artifact", "files", "versions", "bank", "target", "search", "attempts",
    "deploy_seconds", "deployed_at", "dir",
)

# Keys that manifests of older slimda versions lack; they read back with their defaults.
_ADDED_LATER = frozenset({"latency_tolerance", "timed_file", "timed_sha256", "preprocess", "resize", "precision",
                          "upem_fp32", "quantization",
                          "precision_candidates", "dynamic_batch", "latency_batch", "estimated_target_accuracy",
                          "selected_by"})

# Keys every manifest holds; tests and fleet tools rely on them.
REQUIRED_KEYS: tuple[str, ...] = (
    "format", "config_id", "device", "budget", "predicted_latency_ms", "measured_latency_ms", "upem", "flops_m",
    "params_m", "input_shape", "channels", "mean", "std", "class_names", "files", "versions",
)

_DISTRIBUTIONS = ("slimda", "torch", "onnx", "onnxruntime", "openvino", "tensorrt", "fvcore")


def file_records(paths: Iterable[Path], root: Path) -> dict[str, dict[str, object]]:
    """``{relative name: {"sha256": ..., "bytes": ...}}`` for each file."""
    return {str(Path(p).relative_to(root)): {"sha256": sha256_file(p), "bytes": Path(p).stat().st_size}
            for p in paths}


def tool_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Versions of Python and of the installed tools that took part (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions.update(extra or {})
    return versions


def missing_keys(manifest: Mapping[str, object]) -> list[str]:
    """The ``REQUIRED_KEYS`` a manifest lacks."""
    return [k for k in REQUIRED_KEYS if k not in manifest]


# ----------------------------------------------------------------------------------------- the typed record

@dataclass(frozen=True)
class ChosenNetwork:
    """The sub-network deployed: its configuration, costs and the head it answers with."""

    config_id: str
    width: float  # mean width ratio
    widths: Mapping[str, int]  # channels per width site
    arch: str
    flops_m: float
    params_m: float
    head: str
    output: str  # what the output is: logits or log-probabilities

    def to_dict(self) -> dict[str, object]:
        return {"config_id": self.config_id, "width": self.width, "widths": dict(self.widths), "arch": self.arch,
                "flops_m": self.flops_m, "params_m": self.params_m, "head": self.head, "output": self.output}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ChosenNetwork:
        return cls(d["config_id"], d["width"], dict(d["widths"]), d["arch"], d["flops_m"],  # type: ignore[arg-type]
                   d["params_m"], d["head"], d["output"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class LatencyRecord:
    """Predicted and measured latency; ``within_budget`` is ``Budgets.latency_met`` at ``tolerance``."""

    predicted_ms: float | None
    measured_ms: float | None
    measured_ms_raw: float | None
    measured_ms_p90: float | None
    method: str | None
    device_speed_vs_table: float | None
    measurement: Mapping[str, object] | None  # the raw measurement row (profilers' ROW_COLUMNS)
    within_budget: bool | None  # None: no latency budget, or not measured
    tolerance: float  # share the measured latency may exceed the budget by and still be within it
    timed_file: str | None = None  # the file the device loaded and timed, and its SHA-256: the shipped
    timed_sha256: str | None = None  # artefact's, except where the note in ``measurement`` says otherwise

    def to_dict(self) -> dict[str, object]:
        return {"predicted_latency_ms": self.predicted_ms, "measured_latency_ms": self.measured_ms,
                "measured_latency_ms_raw": self.measured_ms_raw, "measured_latency_ms_p90": self.measured_ms_p90,
                "measurement_method": self.method, "device_speed_vs_table": self.device_speed_vs_table,
                "measurement": None if self.measurement is None else dict(self.measurement),
                "within_budget": self.within_budget, "latency_tolerance": self.tolerance,
                "timed_file": self.timed_file, "timed_sha256": self.timed_sha256}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> LatencyRecord:
        """Manifests written before ``latency_tolerance`` existed used none (0); before ``timed_sha256``, the
        timed file went unrecorded."""
        return cls(d["predicted_latency_ms"], d["measured_latency_ms"], d["measured_latency_ms_raw"],  # type: ignore[arg-type]
                   d["measured_latency_ms_p90"], d["measurement_method"], d["device_speed_vs_table"],  # type: ignore[arg-type]
                   d["measurement"], d["within_budget"], float(d.get("latency_tolerance") or 0.0),  # type: ignore[arg-type]
                   d.get("timed_file"), d.get("timed_sha256"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Scores:
    """UPEM against the anchor (what chose the network), target accuracy (report only, when labelled) and the
    label-free estimate of it."""

    upem: float
    distance: str
    target_acc: float | None
    # value, interval, verdict, estimator, threshold, temperature, images behind it, the target's summary;
    # None when there was no source split to calibrate on
    estimate: Mapping[str, object] | None = None
    selected_by: str = "upem"  # what the search minimised (slimda deploy --select-by)

    def to_dict(self) -> dict[str, object]:
        return {"upem": self.upem, "upem_distance": self.distance, "selected_by": self.selected_by,
                "target_acc": self.target_acc, "target_acc_note": TARGET_ACC_NOTE,
                "estimated_target_accuracy": self.estimate}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Scores:
        return cls(d["upem"], d["upem_distance"], d["target_acc"],  # type: ignore[arg-type]
                   d.get("estimated_target_accuracy"), str(d.get("selected_by", "upem")))  # type: ignore[arg-type]


@dataclass(frozen=True)
class PrecisionRecord:
    """The precision deployed; for int8, how it was quantized and its parity (top-1 agreement with its fp32
    network on held-out target images, against the threshold it had to reach); every finalist of the
    width x precision search with its verdict. ``Scores.upem`` is the UPEM as deployed, ``upem_fp32`` the
    same network's in fp32."""

    precision: str | None  # None: a manifest written before precisions were searched
    upem_fp32: float | None
    quantization: Mapping[str, object] | None = None
    candidates: tuple[Mapping[str, object], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"precision": self.precision, "upem_fp32": self.upem_fp32,
                "quantization": None if self.quantization is None else dict(self.quantization),
                "precision_candidates": [dict(c) for c in self.candidates]}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> PrecisionRecord:
        return cls(d.get("precision"), d.get("upem_fp32"), d.get("quantization"),  # type: ignore[arg-type]
                   tuple(d.get("precision_candidates") or ()))  # type: ignore[arg-type]


@dataclass(frozen=True)
class InputRecipe:
    """How to feed the model: tensor names and shape, the preprocessing it was trained with, its classes."""

    input_shape: tuple[int, ...]  # with the batch the latency was timed at (``latency_batch``)
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    input_name: str = "input"
    output_name: str = "scores"
    dynamic_batch: bool = False  # the model's first axis is the symbolic "batch" (any batch size runs)

    def to_dict(self) -> dict[str, object]:
        prep = self.preprocessing.to_dict()
        shape: list[object] = list(self.input_shape)
        if self.dynamic_batch:
            shape[0] = BATCH_AXIS
        return {"input_name": self.input_name, "output_name": self.output_name,
                "input_shape": shape, "dynamic_batch": self.dynamic_batch, "latency_batch": self.input_shape[0],
                "channels": prep["channels"], "mean": prep["mean"],
                "std": prep["std"], "input_size": prep["size"], "pixel_scale": PIXEL_SCALE,
                "preprocess": self.preprocessing.recipe(), "resize": prep["resize"],
                "class_names": list(self.class_names)}

    def model_metadata(self, output: str, precision: str) -> dict[str, str]:
        """What the model file itself carries (ONNX ``metadata_props``; the OpenVINO IR's ``rt_info`` under
        ``model_info``), so that a file handed on without its manifest can still be fed: ``slimda_recipe`` (the
        manifest's recipe as JSON, which ``slimda.runtime`` reads), and the keys OpenVINO's Model API reads as far
        as they can say it. They cannot say the photo recipe's crop of 87.5 % (``resize_type`` ``crop`` crops to
        the input size without a margin), nor class names with spaces (``labels`` is space-separated)."""
        prep = self.preprocessing
        recipe = {"preprocess": prep.recipe(), "class_names": list(self.class_names), "input_name": self.input_name,
                  "output": output, "precision": precision, "format": MANIFEST_FORMAT}
        return {"slimda_recipe": json.dumps(recipe), "model_type": "Classification",
                "labels": " ".join(c.replace(" ", "_") for c in self.class_names),
                "mean_values": " ".join(f"{255 * m:g}" for m in prep.mean),
                "scale_values": " ".join(f"{255 * s:g}" for s in prep.std),
                "resize_type": "crop" if prep.is_photo else "standard"}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> InputRecipe:
        prep = Preprocessing.from_dict({"size": d["input_size"], "channels": d["channels"], "mean": d["mean"],
                                        "std": d["std"], "resize": d.get("resize")})
        shape = list(d["input_shape"])  # type: ignore[call-overload]
        dynamic = bool(d.get("dynamic_batch"))
        if dynamic:
            shape[0] = int(d["latency_batch"])  # type: ignore[call-overload]
        return cls(tuple(shape), prep, tuple(d["class_names"]),  # type: ignore[arg-type]
                   str(d["input_name"]), str(d["output_name"]), dynamic)


@dataclass(frozen=True)
class ArtefactRecord:
    """The exported files: ONNX opset and parity with PyTorch, the runtime's artefact, every file's hash."""

    opset: int
    onnx_parity: float
    kind: str  # "onnx", "openvino-ir", "ort", "tensorrt-engine"
    file: str  # the file the runtime loads, relative to the deployment folder
    notes: Mapping[str, str]  # how it was built (e.g. ort_target_platform)
    files: Mapping[str, Mapping[str, object]]  # file_records(): {name: {"sha256", "bytes"}}

    def to_dict(self) -> dict[str, object]:
        return {"opset": self.opset, "onnx_parity": self.onnx_parity,
                "artifact": {"kind": self.kind, "file": self.file, **self.notes},
                "files": {k: dict(v) for k, v in self.files.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ArtefactRecord:
        art: Mapping[str, str] = d["artifact"]  # type: ignore[assignment]
        notes = {k: v for k, v in art.items() if k not in ("kind", "file")}
        return cls(d["opset"], d["onnx_parity"], art["kind"], art["file"], notes, d["files"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Attempt:
    """One search → export → measure round of a deployment."""

    attempt: int
    config_id: str
    predicted_latency_ms: float | None
    latency_limit_ms: float | None  # the predicted-latency limit that search ran under
    measured_latency_ms: float | None
    precision: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"attempt": self.attempt, "config_id": self.config_id,
                "predicted_latency_ms": self.predicted_latency_ms, "latency_limit_ms": self.latency_limit_ms,
                "measured_latency_ms": self.measured_latency_ms, "precision": self.precision}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Attempt:
        return cls(d["attempt"], d["config_id"], d["predicted_latency_ms"], d["latency_limit_ms"],  # type: ignore[arg-type]
                   d["measured_latency_ms"], d.get("precision"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class SearchRecord:
    """How the winner was found: candidates scored, generations, the best UPEM per generation, seed, time."""

    candidates_scored: int
    generations: int
    best_upem_per_generation: tuple[float, ...]
    seed: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"candidates_scored": self.candidates_scored, "generations": self.generations,
                "best_upem_per_generation": list(self.best_upem_per_generation), "seed": self.seed,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> SearchRecord:
        return cls(d["candidates_scored"], d["generations"], tuple(d["best_upem_per_generation"]),  # type: ignore[arg-type]
                   d["seed"], d["seconds"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Provenance:
    """What produced the deployment: tool versions, the bank, the target images, the search and its rounds."""

    versions: Mapping[str, str]
    bank_run: str
    bank_sha256: str | None
    target_name: str
    images_scored: int
    calibration_images: int
    search: SearchRecord
    attempts: tuple[Attempt, ...]
    deploy_seconds: float
    deployed_at: str  # ISO 8601, UTC
    dir: str
    scored_with: str | None = None  # where and how candidates were scored, e.g. "cuda:0 bf16 channels-last"

    def to_dict(self) -> dict[str, object]:
        return {"versions": dict(self.versions), "bank": {"run": self.bank_run, "sha256": self.bank_sha256},
                "target": {"name": self.target_name, "images_scored": self.images_scored,
                           "calibration_images": self.calibration_images, "scored_with": self.scored_with},
                "search": self.search.to_dict(), "attempts": [a.to_dict() for a in self.attempts],
                "deploy_seconds": self.deploy_seconds, "deployed_at": self.deployed_at, "dir": self.dir}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Provenance:
        bank: Mapping[str, object] = d["bank"]  # type: ignore[assignment]
        target: Mapping[str, object] = d["target"]  # type: ignore[assignment]
        return cls(d["versions"], bank["run"], bank["sha256"], target["name"],  # type: ignore[arg-type]
                   target["images_scored"], target["calibration_images"],  # type: ignore[arg-type]
                   SearchRecord.from_dict(d["search"]),  # type: ignore[arg-type]
                   tuple(Attempt.from_dict(a) for a in d["attempts"]),  # type: ignore[union-attr]
                   d["deploy_seconds"], d["deployed_at"], d["dir"],  # type: ignore[arg-type]
                   target.get("scored_with"))  # type: ignore[arg-type]  # absent before scoring devices


@dataclass(frozen=True)
class Manifest:
    """One deployment, as ``manifest.json`` holds it."""

    device: str
    runtime: str
    budget: Budgets
    network: ChosenNetwork
    latency: LatencyRecord
    scores: Scores
    input: InputRecipe
    artefact: ArtefactRecord
    provenance: Provenance
    precision: PrecisionRecord = PrecisionRecord(None, None)
    format: int = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, object]:
        """The JSON object: the parts' keys in the order of ``MANIFEST_KEYS`` (any other key after them)."""
        merged: dict[str, object] = {"format": self.format, "device": self.device, "runtime": self.runtime,
                                     "budget": self.budget.to_dict()}
        for part in (self.network, self.latency, self.scores, self.precision, self.input, self.artefact,
                     self.provenance):
            merged.update(part.to_dict())
        ordered = {k: merged.pop(k) for k in MANIFEST_KEYS if k in merged}
        return {**ordered, **merged}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Manifest:
        """Inverse of ``to_dict``; a missing key is a ``KeyError`` (``read_manifest`` names the file)."""
        return cls(d["device"], d["runtime"], Budgets.from_dict(d["budget"]),  # type: ignore[arg-type]
                   ChosenNetwork.from_dict(d), LatencyRecord.from_dict(d), Scores.from_dict(d),
                   InputRecipe.from_dict(d), ArtefactRecord.from_dict(d), Provenance.from_dict(d),
                   PrecisionRecord.from_dict(d), int(d["format"]))  # type: ignore[call-overload]


def read_manifest(path: str | os.PathLike) -> Manifest:
    """A deployment's ``manifest.json`` (a folder means the one inside it); a missing key is a ``SlimdaError``."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    data = json.loads(path.read_text())
    missing = [k for k in MANIFEST_KEYS if k not in data and k not in _ADDED_LATER]
    if missing:
        raise SlimdaError(f"{path} lacks {', '.join(missing)}: it was not written by slimda-deploy")
    return Manifest.from_dict(data)
