"""OpenVINO on the CPU, with the inference precision set explicitly and read back.

Recent Intel CPUs (AMX) make the CPU plugin pick bf16 unless ``INFERENCE_PRECISION_HINT`` is given, so
the hint is always set (f32 unless asked otherwise) and the precision the compiled model reports is what
the row records. One stream, ``INFERENCE_NUM_THREADS`` fixed, latency hint; the input tensor is set once
and each timed run is one synchronous ``infer()``, as ``benchmark_app -api sync`` does.
"""

from __future__ import annotations

from pathlib import Path

from slimda.profilers.devices import DeviceProfile
from slimda.profilers.measurement import LocalModel, MeasureOptions
from slimda.profilers.onnxinfo import input_specs, random_feed
from slimda.profilers.ort_cpu import specs_text

HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_READ_BACK = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


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


def open_openvino(path: Path, device: DeviceProfile, opts: MeasureOptions) -> LocalModel:
    import openvino as ov

    precision = opts.precision_for(device)
    threads = opts.threads_for(device) or 1
    specs = input_specs(path, opts.batch, opts.resolution)
    core = ov.Core()
    model = core.read_model(str(path))
    if any(s.dynamic for s in specs):
        model.reshape({s.name: ov.PartialShape(list(s.shape)) for s in specs})
    compiled = core.compile_model(model, "CPU", compile_config(precision, threads))
    used, raw = precision_used(compiled)
    request = compiled.create_infer_request()
    for name, array in random_feed(specs, opts.seed).items():
        request.set_tensor(name, ov.Tensor(array))
    return LocalModel(
        request.infer, dict(device=device.name, runtime="openvino", runtime_version=ov.get_version(), precision=used,
                            threads=int(compiled.get_property("INFERENCE_NUM_THREADS")), batch=opts.batch,
                            input_shape=specs_text(specs)),
        (f"INFERENCE_PRECISION_HINT requested {HINTS[precision]}, compiled {raw}",
         f"NUM_STREAMS={compiled.get_property('NUM_STREAMS')}, PERFORMANCE_HINT=LATENCY",
         f"device={core.get_property('CPU', 'FULL_DEVICE_NAME')}"))
