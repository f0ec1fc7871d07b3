"""Device profilers: time an ONNX model on a device and report latency statistics.

ONNX in, numbers out; nothing here imports torch, so a profile can run on a box that only has a runtime.
Modules (each imported only when used):

- ``devices``: ``DeviceProfile`` and the registry (``get_device``, ``list_devices``).
- ``config``: ``MeasureOptions`` and its typed records ``SSHOptions``, ``AdbOptions``, ``TensorRTOptions``.
- ``base``: ``Measurement`` (``to_row()``), ``PairedMeasurement``, ``failure_row``, ``ROW_COLUMNS``, the
  ``Backend`` interface and ``LocalBackend`` (runtimes driven in this process).
- ``measurement``: the entry points ``measure``, ``measure_paired`` (a model against a reference in
  alternating chunks), ``measure_row``, ``can_pair``, ``check_target``.
- ``backends``: one module per runtime and the registry that picks one for (device, options): ``ort_cpu``,
  ``openvino_cpu``, ``ort_mobile`` (ORT format, adb), ``trtexec`` (Jetson over ssh, ``build_engine``),
  ``tensorrt_local`` (TensorRT Python API), ``remote`` (slimda's ``worker`` on another host over ssh).
- ``stats``: ``LatencyStats``, ``compute_stats``, the warm-up/measurement loop and the paired loop.
- ``onnxinfo``: a model's inputs with concrete shapes, random feeds.
- transports: ``ssh`` (``SSHTarget``), ``adb`` (``AdbTarget``), ``transport`` (what they share).

The common names are importable from the package itself, lazily: ``from slimda.profilers import measure``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DeviceProfile": "devices", "get_device": "devices", "list_devices": "devices",
    "LatencyStats": "stats", "compute_stats": "stats",
    "MeasureOptions": "config", "SSHOptions": "config", "AdbOptions": "config", "TensorRTOptions": "config",
    "Measurement": "base", "PairedMeasurement": "base", "MeasurementError": "base", "failure_row": "base",
    "ROW_COLUMNS": "base", "PAIRED_COLUMNS": "base", "Backend": "base",
    "measure": "measurement", "measure_row": "measurement", "measure_paired": "measurement",
    "can_pair": "measurement", "check_target": "measurement",
    "SSHTarget": "ssh", "AdbTarget": "adb", "TransportError": "transport",
    "build_engine": "backends.trtexec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
