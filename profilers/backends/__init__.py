"""The backends, one module per runtime, and the registry that picks one for (device, options).

- ``ort_cpu``: ONNX Runtime's CPU provider here (``cpu-onnxruntime``);
- ``openvino_cpu``: OpenVINO's CPU plugin here (``cpu-openvino``);
- ``ort_mobile``: ORT format, as a desktop proxy here or on a phone over adb (``ort-mobile``);
- ``trtexec`` (+ ``trtexec_cli``, its flags and logs): trtexec on a Jetson over ssh (``jetson-*``, and
  ``tensorrt`` with a host);
- ``tensorrt_local``: TensorRT's Python API on this host's GPU (``tensorrt``);
- ``remote``: slimda's worker on an ssh host, running the in-process backends there (``cpu-*``, ``ort-mobile``).

Backends are asked in order and the first that handles (device, options) serves: transports and trtexec
before the in-process runtimes, so an ssh host or an adb serial decides first. Modules load on first use.
"""

from __future__ import annotations

import functools

from slimda.errors import ConfigError
from slimda.profilers.base import Backend, LocalBackend
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import DeviceProfile


@functools.cache
def backends() -> tuple[Backend, ...]:
    """Every backend, in the order the registry asks them."""
    from slimda.profilers.backends import openvino_cpu, ort_cpu, ort_mobile, remote, tensorrt_local, trtexec

    local = (ort_cpu.OnnxRuntimeBackend(), openvino_cpu.OpenVINOBackend(), ort_mobile.OrtFormatBackend())
    return (trtexec.TrtexecBackend(), tensorrt_local.TensorRTBackend(), ort_mobile.AdbBackend(),
            remote.RemoteBackend(local), *local)


def backend_for(device: DeviceProfile, options: MeasureOptions) -> Backend:
    """The backend that measures ``device`` reached as ``options`` say."""
    for backend in backends():
        if backend.handles(device, options):
            return backend
    raise _not_here(device)


def native_backend(device: DeviceProfile) -> Backend:
    """The backend of the device's own runtime, whatever transport reaches it: what builds its artefact."""
    return backend_for(device, MeasureOptions())


def local_backend(device: DeviceProfile) -> LocalBackend:
    """The in-process backend for ``device`` (what slimda's worker runs); ``ConfigError`` when there is none."""
    backend = native_backend(device)
    if not isinstance(backend, LocalBackend):
        raise _not_here(device)
    return backend


def _not_here(device: DeviceProfile) -> ConfigError:
    return ConfigError(f"{device.name} cannot be measured on this host by a Python runtime "
                       f"({device.runtime}, reached via {device.where}: {device.reach})")
