"""Stand-in for cuda-python's ``cuda.bindings.runtime`` (see tests/fakes/README.md): "device memory" is
host memory this module hands out and tracks, so a copy in the wrong direction or onto an address cudaMalloc
never returned fails."""

from __future__ import annotations

import ctypes
import time
import types

import numpy as np

_device: dict[int, np.ndarray] = {}


class cudaMemcpyKind:
    cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2


def is_device(address: int) -> bool:
    return int(address) in _device


def cudaMalloc(size: int):
    buffer = np.zeros(int(size), np.uint8)
    _device[buffer.ctypes.data] = buffer
    return 0, buffer.ctypes.data


def cudaFree(address: int):
    _device.pop(int(address))
    return (0,)


def cudaMemcpyAsync(dst: int, src: int, count: int, kind: int, stream: int):
    device, host = (dst, src) if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else (src, dst)
    if not is_device(device) or is_device(host):
        raise AssertionError(f"copy kind {kind} from {src:#x} to {dst:#x}: wrong direction or not device memory")
    if count > _device[int(device)].nbytes:
        raise AssertionError(f"copy of {count} bytes into a buffer of {_device[int(device)].nbytes}")
    ctypes.memmove(dst, src, count)
    return (0,)


def cudaStreamCreate():
    return 0, 7


def cudaStreamSynchronize(stream: int):
    return (0,)


def cudaStreamDestroy(stream: int):
    return (0,)


def cudaEventCreate():
    return 0, types.SimpleNamespace(t=0.0)


def cudaEventRecord(event, stream: int):
    event.t = time.perf_counter()
    return (0,)


def cudaEventSynchronize(event):
    return (0,)


def cudaEventElapsedTime(start, end):
    return 0, (end.t - start.t) * 1e3


def cudaGetDeviceProperties(device: int):
    return 0, types.SimpleNamespace(name=b"Fake GPU 0\0")
