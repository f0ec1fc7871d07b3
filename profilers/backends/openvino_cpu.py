"""OpenVINO on the CPU, with the inference precision set explicitly and read back.

Recent Intel CPUs (AMX) make the CPU plugin pick bf16 unless ``INFERENCE_PRECISION_HINT`` is given, so
the hint is always set (f32 unless asked otherwise) and the precision the compiled model reports is what
the row records. One stream, ``INFERENCE_NUM_THREADS`` fixed, latency hint; the input tensor is set once
and each timed run is one synchronous ``infer()``, as ``benchmark_app -api sync`` does. The deployed
artefact is OpenVINO IR (``model.xml`` + ``model.bin``) with fp32 weights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from slimda.errors import SlimdaError
from slimda.profilers.base import Artifact, LocalBackend, LocalModel, check_artifact_kind, timed_fields
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import BF16, FP16, FP32, INT8, DeviceProfile
from slimda.profilers.onnxinfo import check_int8_model, input_specs, is_quantized, random_feed, specs_text

# int8 comes from the model's Q/DQ nodes; the hint sets the precision of the layers left unquantized.
HINTS = {FP32: "f32", FP16: "f16", BF16: "bf16", INT8: "f32"}
_READ_BACK = {"f32": FP32, "f16": FP16, "bf16": BF16}


def compile_config(precision: str, threads: int) -> dict[str, object]:
    """The CPU plugin configuration the profiler compiles with."""
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }


def precision_used(compiled) -> tuple[str, str]:
    """(our name, OpenVINO's name) of the precision the compiled model reports."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    raw = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return _READ_BACK.get(raw, raw), raw


class OpenVINOBackend(LocalBackend):
    """``cpu-openvino`` on this host (or, through the worker, on an ssh host)."""

    name = "openvino-cpu"
    runtime = "openvino"

    def open_local(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                   artifact: Artifact | None = None) -> LocalModel:
        import openvino as ov

        check_artifact_kind(artifact, ("openvino-ir", "onnx"), self.name)
        precision = options.precision_for(device)
        quantized = check_int8_model(path, precision, device.name) == INT8
        threads = options.threads_for(device) or 1
        specs = input_specs(path, options.batch, options.resolution)
        core = ov.Core()
        if artifact is None:
            model = core.read_model(str(path))
        else:  # the IR that ships: model.xml, and its weights file wherever it was copied to
            model = core.read_model(str(artifact.path), *[str(p) for p in artifact.extra_files[:1]])
        if any(s.dynamic for s in specs):
            model.reshape({s.name: ov.PartialShape(list(s.shape)) for s in specs})
        compiled = core.compile_model(model, "CPU", compile_config(precision, threads))
        used, raw = precision_used(compiled)
        used = INT8 if quantized else used
        request = compiled.create_infer_request()
        for name, array in random_feed(specs, options.seed).items():
            request.set_tensor(name, ov.Tensor(array))
        return LocalModel(
            request.infer, dict(device=device.name, runtime="openvino", runtime_version=ov.get_version(),
                                precision=used, threads=int(compiled.get_property("INFERENCE_NUM_THREADS")),
                                batch=options.batch, input_shape=specs_text(specs),
                                **timed_fields(artifact.path if artifact else None)),
            (f"INFERENCE_PRECISION_HINT requested {HINTS[precision]}, compiled {raw}",
             f"NUM_STREAMS={compiled.get_property('NUM_STREAMS')}, PERFORMANCE_HINT=LATENCY",
             f"device={core.get_property('CPU', 'FULL_DEVICE_NAME')}"))

    def build_artifact(self, onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                       ort_platform: str = "arm") -> Artifact:
        import openvino as ov

        xml, bin_ = out_dir / "model.xml", out_dir / "model.bin"
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ir-") as tmp:
            try:
                model = ov.convert_model(str(onnx_path))
                # the ONNX file's metadata_props arrive as rt_info "framework"; OpenVINO's Model API reads
                # "model_info" (slimda's recipe and the Model API keys: InputRecipe.model_metadata)
                if model.has_rt_info(["framework"]):
                    for key, value in model.get_rt_info(["framework"]).astype(dict).items():
                        model.set_rt_info(value.astype(str), ["model_info", key])
                # fp32 weights: the CPU plugin's precision is chosen when compiling (INFERENCE_PRECISION_HINT)
                ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
            except Exception as err:  # noqa: BLE001 - OpenVINO raises its own exception types
                raise SlimdaError(f"OpenVINO could not convert {onnx_path}: {err}") from err
            os.replace(Path(tmp) / "model.bin", bin_)
            os.replace(Path(tmp) / "model.xml", xml)
        weights = ("int8 (the QDQ model's FakeQuantize nodes; other layers' precision picked at compile time)"
                   if is_quantized(onnx_path) else "fp32 (precision picked at compile time)")
        return Artifact("openvino-ir", xml, (bin_,), {"openvino_version": ov.get_version(), "weights": weights})
