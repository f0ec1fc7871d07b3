"""Width × precision: which precisions a deployment searches, and how a candidate is scored as it will run.

A deployment searches each precision it may use (``--precision auto``: every one the device supports) under
that precision's own latency table. fp32, fp16 and bf16 candidates are scored by their fp32 UPEM (the
network the bank computes). An int8 candidate is scored on the quantized model itself: the sub-network is
exported, quantized with ONNX Runtime's tools (``slimda.export.quantize``) on target images that never score
sub-networks, and run by ONNX Runtime on the scored images; its UPEM is taken against the same anchor (the
full-width fp32 network) as every other candidate, because quantization hurts sub-networks unequally and the
fp32 ranking would not see it. Only the finalists of each precision (its best few by fp32 UPEM) are
quantized. An int8 candidate's parity is top-1 agreement with its own fp32 network on those held-out images;
one below ``Int8Settings.agreement`` is never deployed, and the manifest says why.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from slimda.deploy.export import FP32_NAME, export_checked
from slimda.errors import ConfigError
from slimda.export.manifest import PrecisionRecord
from slimda.export.onnx_export import INPUT_NAME
from slimda.export.quantize import (
    CALIBRATION_METHODS,
    QuantizationRecord,
    TargetCalibrationReader,
    onnx_outputs,
    quantize_qdq,
    split_calibration,
)
from slimda.model.heads import get_head
from slimda.model.space import WidthConfig
from slimda.profilers.devices import INT8
from slimda.select.estimate import Estimate
from slimda.select.evaluate import TargetScorer
from slimda.select.upem import upem

if TYPE_CHECKING:
    from slimda.profilers.devices import DeviceProfile

AUTO = "auto"  # --precision auto: every precision the device supports


@dataclass(frozen=True)
class Int8Settings:
    """How int8 candidates are calibrated, scored and accepted (defaults: benchmarks/precision_accuracy.py)."""

    # ONNX Runtime's calibration method (minmax, entropy, percentile) and image count: benchmarks/
    # precision_accuracy.py picked percentile on 64 images (every setting lost ≤ 0.3 points on digits-cnn)
    method: str = "percentile"
    images: int = 64  # calibration images, drawn from target images that never score
    per_channel: bool = True  # weights quantized per output channel
    agreement: float = 0.9  # least top-1 agreement with the fp32 network for a model to be deployed
    finalists: int = 3  # best candidates by fp32 UPEM quantized and scored as int8, per search
    seed: int = 0  # draws the calibration images

    def check(self) -> Int8Settings:
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}; choose one of "
                              f"{', '.join(CALIBRATION_METHODS)}")
        if self.images < 1:
            raise ConfigError(f"--int8-images must be at least 1, got {self.images}")
        if not 0.0 <= self.agreement <= 1.0:
            raise ConfigError(f"--int8-agreement is a share between 0 and 1, got {self.agreement}")
        if self.finalists < 1:
            raise ConfigError(f"--finalists must be at least 1, got {self.finalists}")
        return self


def precisions_to_search(device: DeviceProfile, asked: str | None) -> list[str]:
    """The precisions a deployment to ``device`` searches: the device's default (``asked`` None), every one it
    supports (``auto``), or the one asked (a ``ConfigError`` listing the supported ones if it lacks it)."""
    if asked is None:
        return [device.precision]
    if asked == AUTO:
        return list(device.precisions)
    return [device.check_precision(asked)]


@dataclass
class Candidate:
    """A sub-network in one precision, scored as it would be deployed."""

    config: WidthConfig
    precision: str
    predicted_ms: float | None
    upem_fp32: float
    upem: float  # as deployed: the quantized model's for int8, else upem_fp32
    agreement: float | None = None  # int8: top-1 agreement with its fp32 network on the scored images
    target_acc: float | None = None  # as deployed, when the target is labelled (report only, never chooses)
    quantization: QuantizationRecord | None = None
    files: Path | None = None  # int8: the folder holding model.onnx (QDQ) and model.fp32.onnx
    parity: float | None = None  # int8: the fp32 export's parity with PyTorch
    verdict: str = "finalist"
    estimate: Estimate | None = None  # estimated target accuracy as deployed (of the quantized model for int8)
    fitness: float | None = None  # what chose it (``TargetScorer.fitness``, lower is better); None: the UPEM

    @property
    def rank_key(self) -> float:
        return self.upem if self.fitness is None else self.fitness

    def to_dict(self) -> dict[str, object]:
        return {"config_id": self.config.id, "precision": self.precision, "predicted_latency_ms": self.predicted_ms,
                "upem_fp32": round(self.upem_fp32, 6), "upem": round(self.upem, 6),
                "agreement": None if self.agreement is None else round(self.agreement, 5),
                "target_acc": None if self.target_acc is None else round(self.target_acc, 5),
                "est_acc": None if self.estimate is None else round(self.estimate.estimate, 5), "verdict": self.verdict}


class QuantizedScorer:
    """int8 candidates of one bank quantized and scored on the target images, cached per (configuration,
    activation format, opset) for the whole fleet. Files live in a scratch folder removed with this object."""

    def __init__(self, scorer: TargetScorer, settings: Int8Settings, dynamic_batch: bool = False) -> None:
        self.scorer, self.settings = scorer, settings.check()
        self.dynamic_batch = dynamic_batch  # the exports take any batch: score them 64 images at a time
        self._dir = Path(tempfile.mkdtemp(prefix="slimda-int8-"))
        self._cache: dict[tuple, Candidate] = {}
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._calibration: list[int] | None = None
        self._images: np.ndarray | None = None
        self._source: np.ndarray | None = None  # the source split, for the int8 models' own estimates

    def calibration_indices(self) -> list[int]:
        """Calibration images: target images that never score (a ``ConfigError`` says how many are needed)."""
        if self._calibration is None:
            target = self.scorer.target
            if target.dataset is None:
                raise ConfigError("int8 calibration needs the target dataset; load it with load_target_images")
            self._calibration = split_calibration(len(target.dataset), self.settings.images, target.scored,
                                                  self.settings.seed)
        return self._calibration

    def scored_images(self) -> np.ndarray:
        if self._images is None:
            self._images = torch.cat(self.scorer.target.images).cpu().numpy().astype(np.float32)
        return self._images

    def candidate(self, config: WidthConfig, activations: str, input_shape: tuple[int, ...], opset: int,
                  predicted_ms: float | None) -> Candidate:
        """``config`` exported for ``input_shape`` at ``opset``, quantized (``activations``: the device's int8
        activation format) and scored as int8."""
        key = (config.id, activations, input_shape, opset)
        if key not in self._cache:
            folder = self._dir / f"{len(self._cache):04d}"
            folder.mkdir()
            fp32, int8 = folder / FP32_NAME, folder / "model.onnx"
            parity = export_checked(self.scorer, config, fp32, input_shape, opset, self.dynamic_batch)
            reader = TargetCalibrationReader(self.scorer.target.dataset, self.calibration_indices(), INPUT_NAME,
                                             batch=1 if self.dynamic_batch else input_shape[0])
            s = self.settings
            record = quantize_qdq(fp32, int8, reader, s.method, s.per_channel, activations)
            fp32_out, int8_out = onnx_outputs([fp32, int8], self.scored_images(),
                                             64 if self.dynamic_batch else input_shape[0])
            probs = get_head(self.scorer.head).probabilities(torch.from_numpy(int8_out))
            agreement = float((fp32_out.argmax(1) == int8_out.argmax(1)).mean())
            labels = self.scorer.target.labels
            acc = None if labels is None else float((probs.argmax(1) == labels).float().mean())
            as_int8 = upem(probs, self.scorer.anchor, self.scorer.distance)
            estimate = self._estimate(int8, probs, input_shape)
            self._cache[key] = Candidate(config, INT8, predicted_ms, self.scorer.upem(config), as_int8, agreement, acc,
                                         record, folder, parity, estimate=estimate,
                                         fitness=self.scorer.fitness_from(as_int8, estimate))
        return replace(self._cache[key], predicted_ms=predicted_ms, verdict="finalist")


    def _estimate(self, model: Path, target_probs: torch.Tensor, input_shape: tuple[int, ...]) -> Estimate | None:
        """The quantized model's own estimate: its softmax on the source split and on the scored target."""
        if self.scorer.no_estimate:
            return None
        if self._source is None:
            self._source = torch.cat(self.scorer.source.images).cpu().numpy().astype(np.float32)
        (out,) = onnx_outputs([model], self._source, 64 if self.dynamic_batch else input_shape[0])
        probs = get_head(self.scorer.head).probabilities(torch.from_numpy(out))
        return self.scorer.estimate_from(probs, target_probs)


def choose(candidates: Sequence[Candidate], agreement: float) -> Candidate | None:
    """The candidate with the least UPEM as deployed (or the best fitness, ``--select-by``; then the least
    predicted latency) among those whose int8 agreement reaches ``agreement``; sets every candidate's
    ``verdict``. None: every one was refused."""
    ranked = sorted(candidates, key=lambda c: (c.rank_key, c.predicted_ms if c.predicted_ms is not None else 0.0))
    winner = None
    for c in ranked:
        if c.agreement is not None and c.agreement < agreement:
            c.verdict = (f"not deployed: its int8 model agrees with its fp32 network on {c.agreement:.1%} of the "
                         f"held-out target images, under the {agreement:.0%} threshold")
        elif winner is None:
            winner, c.verdict = c, "deployed"
        else:
            c.verdict = (f"UPEM {c.upem:.4g} as deployed, above the winner's {winner.upem:.4g}" if c.fitness is None
                         else f"selection score {c.fitness:.4g} as deployed, above the winner's {winner.fitness:.4g}")
    return winner


def precision_record(chosen: Candidate, candidates: Sequence[Candidate], settings: Int8Settings,
                     images_scored: int) -> PrecisionRecord:
    """The manifest's precision part: what was deployed, how it was quantized and every finalist's verdict."""
    quantization = None
    if chosen.quantization is not None:
        quantization = {
            **chosen.quantization.to_dict(), "agreement": round(chosen.agreement or 0.0, 5),
            "agreement_threshold": settings.agreement, "agreement_images": images_scored,
            "agreement_note": "top-1 agreement with its fp32 network (model.fp32.onnx) on held-out target images, "
                              "none of them used for calibration",
            "finalists_per_search": settings.finalists}
    return PrecisionRecord(chosen.precision, round(chosen.upem_fp32, 6), quantization,
                           tuple(c.to_dict() for c in candidates))
