"""Device profiles: which runtime, precision and threads a target uses, and how to reach it.

The registry holds the targets of DESIGN §2.4. A profile is a default: ``MeasureOptions`` can override
threads, precision, host or adb serial per call. ``default_opset`` is what export should use for the
device (TensorRT 8.2 on JetPack 4.6 parses opset 13 reliably; everything else takes 17).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from slimda.errors import ConfigError

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"

# An inference precision, as options, table rows and manifests write it. Plain strings (so that they hash and
# compare as the text read back from a CSV or JSON file does), typed for checkers, named once here.
Precision = Literal["fp32", "fp16", "bf16", "int8"]
FP32: Precision = "fp32"
FP16: Precision = "fp16"
BF16: Precision = "bf16"
INT8: Precision = "int8"
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


@dataclass(frozen=True)
class DeviceProfile:
    """A profiling target. ``where`` is ``local``, ``ssh`` or ``adb`` (``local+adb``: local unless a serial
    is given). ``threads`` is None where it does not apply (GPU). ``precision`` is the default of
    ``precisions``, the ones the device runs fast enough to be worth deploying (int8: a QDQ model)."""

    name: str
    runtime: str
    precision: Precision
    threads: int | None
    where: str
    default_opset: int
    description: str
    reach: str
    trt_version: str | None = None
    precisions: tuple[Precision, ...] = (FP32,)
    # int8 models for this device quantize activations as int8 symmetric (TensorRT's explicit quantization
    # accepts nothing else) or uint8 asymmetric (ONNX Runtime's fast x86 kernels are U8S8: with int8
    # activations its int8 models ran slower than fp32 here; benchmarks/precision_speedup.py)
    int8_activations: str = "int8"  # an activation format (ACTIVATIONS in export/quantize), not a precision

    @property
    def dynamic_batch(self) -> bool:
        """Whether slimda deploys models with a symbolic batch axis to it: ONNX Runtime and OpenVINO take any
        batch; TensorRT engines are built here for the fixed input shape (no optimization profiles)."""
        return not self.runtime.startswith("tensorrt")

    @property
    def is_jetson(self) -> bool:
        return self.name.startswith("jetson-")

    def check_precision(self, precision: str) -> Precision:
        """``precision`` if this device supports it; otherwise a ``ConfigError`` listing those it does."""
        if precision not in self.precisions:
            why = _WHY_NOT.get((self.name, precision), "")
            raise ConfigError(f"{self.name} does not run {precision}{why}; it supports {', '.join(self.precisions)} "
                              f"(default {self.precision})")
        return precision  # type: ignore[return-value]  # one of self.precisions


# Why a device lacks a precision, where the reason is not obvious.
_WHY_NOT = {("jetson-nano", INT8): " (its Maxwell GPU has no fast INT8 kernels)",
            ("jetson-nano", BF16): " (TensorRT 8.2 has no bf16)",
            ("cpu-onnxruntime", FP16): " (the CPU execution provider has no general fp16 kernels)",
            ("cpu-onnxruntime", BF16): " (the CPU execution provider has no general bf16 kernels)"}


_DEVICES: tuple[DeviceProfile, ...] = (
    DeviceProfile(
        "cpu-onnxruntime", "onnxruntime", FP32, 1, "local", 17,
        "ONNX Runtime CPUExecutionProvider, fixed intra-op threads, sequential execution",
        "this host; or any host with slimda + onnxruntime over --host user@addr", precisions=(FP32, INT8),
        int8_activations="uint8"),
    DeviceProfile(
        "cpu-openvino", "openvino", FP32, 1, "local", 17,
        "OpenVINO CPU plugin, INFERENCE_PRECISION_HINT set explicitly (f32 default), 1 stream, latency hint",
        "this host; or an Intel box with slimda + openvino over --host user@addr",
        precisions=(FP32, BF16, INT8), int8_activations="uint8"),
    DeviceProfile(
        "ort-mobile", "onnxruntime-ort-format", FP32, 1, "local+adb", 17,
        "ONNX Runtime with the model converted to ORT format, 1 thread; desktop proxy or a phone over adb",
        "this host (proxy); a phone with --adb SERIAL and onnxruntime_perf_test pushed to it",
        precisions=(FP32, INT8), int8_activations="uint8"),
    DeviceProfile(
        "jetson-nano", "tensorrt-trtexec", FP16, None, "ssh", 13,
        "Jetson Nano (JetPack 4.6, TensorRT 8.2): trtexec on the device, fp16",
        f"--host user@jetson; trtexec at {JETPACK_TRTEXEC}", trt_version="8.2", precisions=(FP32, FP16)),
    DeviceProfile(
        "jetson-orin-nano", "tensorrt-trtexec", FP16, None, "ssh", 17,
        "Jetson Orin Nano (JetPack 5/6, TensorRT 8.5-10.x): trtexec on the device, fp16",
        f"--host user@jetson; trtexec at {JETPACK_TRTEXEC}", precisions=(FP16, INT8)),
    DeviceProfile(
        "jetson-agx-orin", "tensorrt-trtexec", FP16, None, "ssh", 17,
        "Jetson AGX Orin (JetPack 5/6, TensorRT 8.5-10.x): trtexec on the device, fp16",
        f"--host user@jetson; trtexec at {JETPACK_TRTEXEC}", precisions=(FP16, INT8)),
    DeviceProfile(
        "tensorrt", "tensorrt-python", FP16, None, "local", 17,
        "TensorRT Python API on this host's NVIDIA GPU (builder, ONNX parser, CUDA-event timing)",
        "this host: pip install tensorrt cuda-python (NVIDIA's index) and an NVIDIA driver",
        precisions=(FP32, FP16, INT8)),
)

DEVICES: dict[str, DeviceProfile] = {d.name: d for d in _DEVICES}


def list_devices() -> list[DeviceProfile]:
    """All registered profiles, in registry order."""
    return list(_DEVICES)


def get_device(name: str | DeviceProfile) -> DeviceProfile:
    """The profile called ``name``; an unknown name raises ``ConfigError`` listing the devices."""
    if isinstance(name, DeviceProfile):
        return name
    try:
        return DEVICES[name]
    except KeyError:
        known = ", ".join(DEVICES)
        raise ConfigError(f"unknown device {name!r}; known devices: {known} (see slimda profile --list-devices)")\
            from None


def device_table() -> list[dict[str, str]]:
    """Rows for ``--list-devices``: name, runtime, where, default precision, supported ones, description."""
    return [
        {"name": d.name, "runtime": d.runtime, "where": d.where, "precision": d.precision,
         "precisions": ",".join(d.precisions), "description": d.description}
        for d in _DEVICES
    ]
