"""Device profilers: time an ONNX model on a device and report latency statistics.

ONNX in, numbers out; nothing here imports torch, so a profile can run on a box that only has a runtime.
Modules (each imported only when used):

- ``devices``: ``DeviceProfile`` and the registry (``get_device``, ``list_devices``).
- ``measurement``: ``MeasureOptions``, ``Measurement`` (``to_row()``), ``measure``, ``measure_paired`` (a
  model against a reference in alternating chunks), ``measure_row``, ``failure_row``, ``ROW_COLUMNS``.
- ``stats``: ``LatencyStats``, ``compute_stats``, the warm-up/measurement loop and the paired loop.
- runtimes: ``ort_cpu``, ``openvino_cpu``, ``ort_mobile`` (ORT format, adb), ``trtexec`` (Jetson over
  ssh, ``build_engine``), ``tensorrt_local`` (TensorRT Python API); ``remote``/``worker`` run CPU
  profiles on another host over ssh.
- transports: ``ssh`` (``SSHTarget``), ``adb`` (``AdbTarget``).

The common names are importable from the package itself, lazily: ``from slimda.profilers import measure``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DeviceProfile": "devices", "get_device": "devices", "list_devices": "devices",
    "LatencyStats": "stats", "compute_stats": "stats",
    "MeasureOptions": "measurement", "Measurement": "measurement", "measure": "measurement",
    "measure_row": "measurement", "failure_row": "measurement", "ROW_COLUMNS": "measurement",
    "measure_paired": "measurement", "PairedMeasurement": "measurement",
    "MeasurementError": "measurement",
    "SSHTarget": "ssh", "AdbTarget": "adb", "TransportError": "transport",
    "build_engine": "trtexec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
