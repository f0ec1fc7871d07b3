"""The runtimes a deployed artefact runs in, behind one small interface (as OpenVINO's Model API puts one
adapter per runtime): ``run(batch [N, C, H, W] float32) -> scores [N, K]`` and the batch the model takes.

ONNX Runtime runs ``.onnx`` and ``.ort`` files, OpenVINO an IR (``.xml`` + ``.bin``), TensorRT an engine
(``slimda.runtime.tensorrt``: its Python API with cuda-python buffers). A runtime that is not installed is a
``SlimdaError`` naming the pip package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from slimda.errors import SlimdaError

PIP_PACKAGE = {"onnx": "onnxruntime", "ort": "onnxruntime", "openvino-ir": "openvino"}


class Backend:
    """A loaded model: ``batch`` is the batch its input takes (None: any), ``run`` its forward pass."""

    batch: int | None = None
    name = ""

    def run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = import_runtime("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        first = model_input.shape[0]
        self.batch = first if isinstance(first, int) else None

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: images})[0]


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, precision: str = "fp32") -> None:
        ov = import_runtime("openvino")
        config: dict[str, object] = {}
        if precision == "fp32":  # OpenVINO would pick bf16 on CPUs that have it: not what was deployed
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        model = core.read_model(str(path))
        first = model.inputs[0].get_partial_shape()[0]
        self.batch = None if first.is_dynamic else first.get_length()
        self.compiled = core.compile_model(model, "CPU", config)

    def run(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(images)[self.compiled.outputs[0]])


class TensorRTBackend(Backend):
    """An engine on this machine's GPU. ``built``: how the manifest says it was built (TensorRT version, host),
    named when this TensorRT or GPU cannot load it."""

    name = "tensorrt"

    def __init__(self, path: Path, built: Mapping[str, object] | None = None) -> None:
        from slimda.runtime.tensorrt import Engine

        self.engine = Engine(path.read_bytes(), str(path), built)
        if len(self.engine.inputs) != 1 or not self.engine.outputs:
            raise SlimdaError(f"{path} has inputs {self.engine.inputs} and outputs {self.engine.outputs}: a slimda "
                              "classifier takes one image tensor and returns scores")
        first = self.engine.input_shape()[0]
        self.batch = first if first > 0 else None

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.engine.run({self.engine.inputs[0]: images})[self.engine.outputs[0]]


def open_backend(kind: str, path: Path, threads: int | None = None, precision: str = "fp32",
                 built: Mapping[str, object] | None = None) -> Backend:
    """The backend for an artefact ``kind`` (the manifest's ``artifact.kind``, or from the file's suffix);
    ``built``: the manifest's notes on how the artefact was built."""
    if kind in ("onnx", "ort"):
        return OnnxRuntimeBackend(path, threads)
    if kind == "openvino-ir":
        return OpenVinoBackend(path, threads, precision)
    if kind == "tensorrt-engine":
        return TensorRTBackend(path, built)
    raise SlimdaError(f"cannot tell which runtime runs {path} (artefact kind {kind!r})")


def kind_of(path: Path) -> str:
    """The artefact kind a model file's suffix means."""
    return {".onnx": "onnx", ".ort": "ort", ".xml": "openvino-ir", ".engine": "tensorrt-engine",
            ".plan": "tensorrt-engine"}.get(path.suffix.lower(), "")


def import_runtime(module: str, package: str | None = None):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SlimdaError(f"this model needs {module}, which is not installed: "
                          f"pip install {package or module}") from None
