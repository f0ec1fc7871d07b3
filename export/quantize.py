"""Static INT8 quantization of an exported model with ONNX Runtime's own tools, calibrated on target images.

A QDQ model serves every runtime slimda deploys to: ONNX Runtime fuses the Q/DQ pairs into int8 kernels,
OpenVINO reads QDQ ONNX as an int8 model, and TensorRT builds it by explicit quantization (``trtexec --int8``).
Weights are int8 symmetric per output channel. Activations are in the device's format
(``DeviceProfile.int8_activations``): int8 symmetric for TensorRT, which accepts nothing else, and uint8
asymmetric for the CPU runtimes, whose fast x86 kernels are U8S8. Calibration images are unlabelled target
images, the deployment site's own, fed through the manifest's preprocessing (``Preprocessing``), and never the
images that score sub-networks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from slimda.errors import ConfigError, SlimdaError

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
# Activation formats: int8 symmetric (zero point 0, what TensorRT's explicit quantization requires) or uint8
# asymmetric (ONNX Runtime's fast x86 path, U8S8); weights are int8 symmetric per channel either way.
ACTIVATIONS: tuple[str, ...] = ("int8", "uint8")


class TargetCalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` interface (``get_next``, ``rewind``) over target images:
    ``dataset`` is the target domain read with the manifest's preprocessing (``Domain.dataset(prep)``),
    ``indices`` the calibration images. Duck-typed, so importing this module needs no onnxruntime.

    It records what it fed (``fed_indices`` and the SHA-256 of every array), for the manifest and for tests.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], input_name: str = "input", batch: int = 1) -> None:
        if not indices:
            raise ConfigError("calibration needs at least one target image")
        if batch < 1:
            raise ConfigError(f"calibration batch must be at least 1, got {batch}")
        self.dataset, self.indices, self.input_name, self.batch = dataset, list(indices), input_name, batch
        self.fed_indices: list[int] = []
        self.fed_sha256: list[str] = []
        self._iterator: Iterator[list[int]] | None = None

    def _batches(self) -> Iterator[list[int]]:
        """The indices in groups of ``batch`` (a model exported with a fixed batch takes nothing else); the
        last group is filled up from the start of the list, so every image fed is a calibration image."""
        for start in range(0, len(self.indices), self.batch):
            group = self.indices[start:start + self.batch]
            fill = self.batch - len(group)
            yield group + [self.indices[i % len(self.indices)] for i in range(fill)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iterator is None:
            self._iterator = self._batches()
        group = next(self._iterator, None)
        if group is None:
            return None
        images = [self.dataset[index][0].numpy().astype(np.float32) for index in group]
        for index, x in zip(group, images):
            if len(self.fed_indices) < len(self.indices):  # each image once, however often a batch repeats it
                self.fed_indices.append(index)
                self.fed_sha256.append(hashlib.sha256(x[None].tobytes()).hexdigest())
        return {self.input_name: np.stack(images)}

    def rewind(self) -> None:
        self._iterator = None


@dataclass(frozen=True)
class QuantizationRecord:
    """How a model was quantized, as the manifest records it."""

    method: str
    per_channel: bool
    activations: str
    images: int
    image_indices: tuple[int, ...]
    image_sha256: tuple[str, ...] = field(repr=False)
    tool: str

    def to_dict(self) -> dict[str, object]:
        return {"calibration_method": self.method, "per_channel": self.per_channel, "activations": self.activations,
                "calibration_images": self.images, "calibration_indices": list(self.image_indices),
                "calibration_sha256": list(self.image_sha256), "quantizer": self.tool}


def split_calibration(count: int, calibration: int, scored: Sequence[int], seed: int = 0) -> list[int]:
    """``calibration`` target image indices out of ``count``, none of them in ``scored`` (drawn with ``seed``).

    A ``ConfigError`` says how many images calibration needs when the target has too few left.
    """
    taken = set(scored)
    free = [i for i in range(count) if i not in taken]
    if len(free) < calibration:
        raise ConfigError(f"int8 calibration needs {calibration} target images that are not used for scoring, "
                          f"but the target has {count} images and {len(taken)} score sub-networks: add target "
                          f"images, calibrate on fewer (--int8-images), or score on fewer (--score-images)")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(free, size=calibration, replace=False))


def quantize_qdq(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, reader: TargetCalibrationReader,
                 method: str = "minmax", per_channel: bool = True, activations: str = "int8") -> QuantizationRecord:
    """Write ``onnx_out``: ``onnx_in`` statically quantized to QDQ (int8 weights per channel; ``activations``
    int8 symmetric or uint8 asymmetric), calibrated by ``reader``.

    The output is written beside and renamed, so an interrupted quantization leaves no partial file.
    """
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    if activations not in ACTIVATIONS:
        raise ConfigError(f"unknown activation format {activations!r}; choose one of {', '.join(ACTIVATIONS)}")
    activation_type = QuantType.QInt8 if activations == "int8" else QuantType.QUInt8
    onnx_out = Path(onnx_out)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=onnx_out.parent, prefix=".quantize-") as tmp:
        prepared, written = Path(tmp) / "prepared.onnx", Path(tmp) / "model.qdq.onnx"
        try:
            # ONNX Runtime's recommended first step: shape inference and graph optimisation before quantizing
            quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(written), reader, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=activation_type, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method],
                            extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True})
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises many types
            raise SlimdaError(f"ONNX Runtime could not quantize {onnx_in}: {type(err).__name__}: {err}") from err
        os.replace(written, onnx_out)
    return QuantizationRecord(method, per_channel, activations, len(reader.fed_indices), tuple(reader.fed_indices),
                              tuple(reader.fed_sha256), f"onnxruntime.quantization {onnxruntime.__version__}")


class SyntheticInputs(Dataset):
    """``count`` random inputs of ``shape`` (without the batch dimension), for quantizing what is only *timed*.

    A latency table's blocks and networks are quantized with the deployed model's settings (Q/DQ placement,
    per-channel weights, activation format), so int8 kernels are chosen as they will be; the scales the
    calibration picks do not change how long a kernel takes, so no target image is needed for them.
    """

    def __init__(self, shape: Sequence[int], count: int = 4, seed: int = 0) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)
        self.inputs = [torch.randn(tuple(shape), generator=gen) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        return self.inputs[i], -1


def quantize_for_timing(onnx_path: str | os.PathLike, input_shape: Sequence[int], activations: str) -> Path:
    """Replace ``onnx_path`` by its int8 QDQ form, calibrated on ``SyntheticInputs`` (see there: timing only)."""
    onnx_path = Path(onnx_path)
    fp32 = onnx_path.with_name(f"{onnx_path.stem}.fp32.onnx")
    os.replace(onnx_path, fp32)
    data = SyntheticInputs(input_shape[1:])
    try:  # fed at the model's batch: a table timed at batch N exports every block with a fixed batch N
        quantize_qdq(fp32, onnx_path, TargetCalibrationReader(data, list(range(len(data))), batch=int(input_shape[0])),
                     activations=activations)
    finally:
        fp32.unlink(missing_ok=True)
    return onnx_path


def onnx_outputs(paths: Sequence[str | os.PathLike], images: np.ndarray, batch: int = 1,
                 input_name: str = "input") -> list[np.ndarray]:
    """Each model's outputs ``[N, K]`` on ``images`` ``[N, C, H, W]``, run by ONNX Runtime's CPU provider in
    the model's own batch size (an incomplete last batch is padded and cut)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]
    outputs: list[list[np.ndarray]] = [[] for _ in paths]
    for start in range(0, len(images), batch):
        x = images[start:start + batch].astype(np.float32)
        n = len(x)
        if n < batch:
            x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])
        for session, out in zip(sessions, outputs):
            out.append(session.run(None, {input_name: x})[0][:n])
    return [np.concatenate(out) for out in outputs]


def top1_agreement(fp32_onnx: str | os.PathLike, int8_onnx: str | os.PathLike, images: np.ndarray,
                   input_name: str = "input", batch: int = 1) -> float:
    """Share of ``images`` ``[N, C, H, W]`` on which the int8 model's top-1 class is the fp32 model's (ONNX
    Runtime, in the models' batch size): the parity of a quantized model, needing no labels."""
    if len(images) == 0:
        return 0.0
    a, b = onnx_outputs([fp32_onnx, int8_onnx], images, batch, input_name)
    return float((a.argmax(1) == b.argmax(1)).mean())
