"""ONNX file → the artefact a device's runtime loads.

| device            | artefact                     | how                                                         |
| ----------------- | ---------------------------- | ----------------------------------------------------------- |
| cpu-onnxruntime   | the ONNX file itself         | -                                                           |
| cpu-openvino      | ``model.xml`` + ``model.bin`` | ``openvino.convert_model`` + ``save_model`` (fp32 weights)   |
| ort-mobile        | ``model.ort``                | ORT format, optimised for the phone's platform (``arm``)    |
| jetson-*          | ``model.engine``             | ``trtexec --saveEngine`` on the Jetson over ssh, copied back |
| tensorrt          | ``model.engine``             | TensorRT Python builder on this host's GPU                  |

TensorRT engines only run on the GPU model and TensorRT version that built them, which is why a Jetson's
engine is built on that Jetson. Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from slimda.errors import SlimdaError
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.measurement import MeasureOptions
from slimda.tables import atomic_output


@dataclass(frozen=True)
class Artifact:
    """What :func:`build_artifact` produced: the file the runtime loads (plus side files), and how."""

    kind: str  # "onnx", "openvino-ir", "ort", "tensorrt-engine"
    path: Path
    extra_files: tuple[Path, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.path, *self.extra_files)


def build_artifact(onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                   ort_platform: str = "arm") -> Artifact:
    """Convert ``onnx_path`` for ``device`` into ``out_dir``; raises ``SlimdaError`` naming the step."""
    if device.runtime == "onnxruntime":
        return Artifact("onnx", onnx_path)
    if device.runtime == "openvino":
        return _openvino_ir(onnx_path, out_dir)
    if device.runtime == "onnxruntime-ort-format":
        return _ort_format(onnx_path, out_dir, ort_platform)
    if device.runtime == "tensorrt-trtexec":
        return _trtexec_engine(onnx_path, device, out_dir, options)
    if device.runtime == "tensorrt-python":
        return _local_engine(onnx_path, device, out_dir, options)
    raise SlimdaError(f"no runtime artefact is known for device {device.name} (runtime {device.runtime})")


def _openvino_ir(onnx_path: Path, out_dir: Path) -> Artifact:
    import openvino as ov

    xml, bin_ = out_dir / "model.xml", out_dir / "model.bin"
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ir-") as tmp:
        try:
            model = ov.convert_model(str(onnx_path))
            # fp32 weights: the CPU plugin's precision is chosen when compiling (INFERENCE_PRECISION_HINT)
            ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        except Exception as err:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise SlimdaError(f"OpenVINO could not convert {onnx_path}: {err}") from err
        os.replace(Path(tmp) / "model.bin", bin_)
        os.replace(Path(tmp) / "model.xml", xml)
    return Artifact("openvino-ir", xml, (bin_,), {"openvino_version": ov.get_version(),
                                                  "weights": "fp32 (precision picked at compile time)"})


def _ort_format(onnx_path: Path, out_dir: Path, target_platform: str) -> Artifact:
    from slimda.profilers.ort_mobile import convert_to_ort

    with tempfile.TemporaryDirectory(prefix="slimda-ort-") as cache:
        converted = convert_to_ort(onnx_path, target_platform, cache_dir=cache)
        final = out_dir / "model.ort"
        _copy_atomic(converted, final)
    return Artifact("ort", final, notes={"ort_target_platform": target_platform})


def _trtexec_engine(onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions) -> Artifact:
    from slimda.profilers.trtexec import build_engine

    final = out_dir / "model.engine"
    with atomic_output(final) as partial:
        build = build_engine(onnx_path, device, options, local_engine=partial)
    return Artifact("tensorrt-engine", final, notes={
        "tensorrt_version": build.trt_version, "precision": build.precision, "built_on": options.host or "",
        "remote_engine": build.remote_path, "build_command": build.command})


def _local_engine(onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions) -> Artifact:
    from slimda.profilers.tensorrt_local import build_serialized_engine, import_tensorrt

    precision = options.precision_for(device)
    engine = build_serialized_engine(onnx_path, precision, options.workspace_mib)
    final = out_dir / "model.engine"
    with atomic_output(final) as partial:
        partial.write_bytes(engine)
    return Artifact("tensorrt-engine", final, notes={"tensorrt_version": import_tensorrt().__version__,
                                                     "precision": precision})


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_output(dst) as partial:
        shutil.copyfile(src, partial)
