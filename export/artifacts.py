"""ONNX file → the artefact a device's runtime loads.

| device            | artefact                     | how                                                         |
| ----------------- | ---------------------------- | ----------------------------------------------------------- |
| cpu-onnxruntime   | the ONNX file itself         | -                                                           |
| cpu-openvino      | ``model.xml`` + ``model.bin`` | ``openvino.convert_model`` + ``save_model`` (fp32 weights)   |
| ort-mobile        | ``model.ort``                | ORT format, optimised for the phone's platform (``arm``)    |
| jetson-*          | ``model.engine``             | ``trtexec --saveEngine`` on the Jetson over ssh, copied back |
| tensorrt          | ``model.engine``             | TensorRT Python builder on this host's GPU                  |

Each conversion belongs to the device's own runtime backend (``slimda.profilers.backends``, its
``build_artifact``). TensorRT engines only run on the GPU model and TensorRT version that built them, which
is why a Jetson's engine is built on that Jetson. Every file is written under a temporary name and renamed
into place.
"""

from __future__ import annotations

from pathlib import Path

from slimda.profilers.backends import native_backend
from slimda.profilers.base import Artifact
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import DeviceProfile

__all__ = ["Artifact", "build_artifact"]


def build_artifact(onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                   ort_platform: str = "arm") -> Artifact:
    """Convert ``onnx_path`` for ``device`` into ``out_dir``; raises ``SlimdaError`` naming the step."""
    return native_backend(device).build_artifact(onnx_path, device, out_dir, options, ort_platform)
