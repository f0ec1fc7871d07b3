"""A scored sub-network turned into the checked files a device runs.

``export_checked`` is the one way a bank's sub-network becomes an ONNX file: extracted with BatchNorm
recalibrated on the target images as they were scored (``TargetScorer.calibrated``), exported at the device's
opset and input shape, and compared with PyTorch on real target images (refused over ``PARITY_TOLERANCE``).
Deploy, the int8 scorer (which quantizes that file) and ``slimda-bench`` (through the int8 scorer) all call it.
``export_for_device`` adds the runtime's artefact for the chosen candidate of a deployment.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from slimda.errors import SlimdaError
from slimda.export.onnx_export import PARITY_TOLERANCE, export_onnx, parity_error
from slimda.model.space import WidthConfig
from slimda.select.evaluate import TargetScorer

if TYPE_CHECKING:
    from slimda.profilers.base import Artifact
    from slimda.profilers.config import MeasureOptions
    from slimda.profilers.devices import DeviceProfile

PARITY_IMAGES = 8  # target images the exported model is compared on, one forward each
FP32_NAME = "model.fp32.onnx"  # an int8 deployment's fp32 network, beside its QDQ model.onnx


@dataclass(frozen=True)
class ExportResult:
    """One sub-network exported for a device: the ONNX file, the runtime's artefact and their parity."""

    config: WidthConfig
    onnx: Path
    artifact: Artifact
    parity: float  # largest relative ONNX Runtime vs PyTorch difference of the fp32 export (``PARITY_TOLERANCE``)
    extra_files: tuple[Path, ...] = ()  # int8: the fp32 network the QDQ model was quantized from


def export_checked(scorer: TargetScorer, config: WidthConfig, path: Path, input_shape: tuple[int, ...],
                   opset: int, dynamic_batch: bool = False) -> float:
    """Export ``config``'s network (the scorer's head, BatchNorm recalibrated on its target) to ``path`` in fp32;
    returns its parity with PyTorch, a ``SlimdaError`` when over ``PARITY_TOLERANCE``."""
    net = scorer.calibrated(config).net(scorer.head).eval()
    export_onnx(net, path, input_shape, opset, dynamic_batch=dynamic_batch)
    images = torch.cat(scorer.target.images)
    parity = parity_on(net, path, input_shape[0], images)
    if dynamic_batch:  # a symbolic batch must give the same answers at another batch size
        parity = max(parity, parity_on(net, path, PARITY_IMAGES, images))
    if parity > PARITY_TOLERANCE:
        raise SlimdaError(f"exported ONNX differs from PyTorch by {parity:.2e} (relative; tolerance "
                          f"{PARITY_TOLERANCE:g}) for {config.id}; nothing was deployed")
    return parity


def parity_on(net: torch.nn.Module, onnx_path: Path, batch: int, images: torch.Tensor) -> float:
    """Largest relative ONNX Runtime vs PyTorch difference over ``PARITY_IMAGES`` batches of target images."""
    images = images[: PARITY_IMAGES * batch]
    worst = 0.0
    for start in range(0, len(images) - batch + 1, batch):
        worst = max(worst, parity_error(net, onnx_path, images[start:start + batch]))
    return worst


def export_for_device(scorer: TargetScorer, config: WidthConfig, stage: Path, device: DeviceProfile,
                      input_shape: tuple[int, ...], opts: MeasureOptions, ort_platform: str = "arm",
                      dynamic_batch: bool = False, quantized: tuple[Path, float] | None = None,
                      metadata: dict[str, str] | None = None) -> ExportResult:
    """``config``'s ``model.onnx`` in ``stage`` and the runtime's artefact built from it: the fp32 network, or
    for int8 the QDQ model that was scored, ``quantized`` = (its folder, its fp32 export's parity), copied with
    its fp32 network beside it. ``metadata`` (``InputRecipe.model_metadata``) goes into ``model.onnx`` before
    the artefact is built from it, so every artefact carries it."""
    from slimda.export.artifacts import build_artifact
    from slimda.export.onnx_export import embed_metadata

    onnx_path = stage / "model.onnx"
    if quantized is not None:
        folder, parity = quantized
        for name in ("model.onnx", FP32_NAME):
            shutil.copy2(folder / name, stage / name)
    else:
        parity = export_checked(scorer, config, onnx_path, input_shape, device.default_opset, dynamic_batch)
    if metadata:
        embed_metadata(onnx_path, metadata)
    artifact = build_artifact(onnx_path, device, stage, opts, ort_platform)
    extra = (stage / FP32_NAME,) if quantized is not None else ()
    return ExportResult(config, onnx_path, artifact, parity, extra)
