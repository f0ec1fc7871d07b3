"""A serialised TensorRT engine loaded and run from NumPy, with no torch: what ``slimda predict`` runs a
``model.engine`` with, and what the ``tensorrt`` profiler times.

Written against TensorRT's Python API as of 8.5 (JetPack 5 and 6, TensorRT 10 on x86): ``Runtime``,
``deserialize_cuda_engine``, tensors addressed by name (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``set_input_shape``, ``set_tensor_address``) and ``execute_async_v3`` on a CUDA stream.
Device memory, copies and streams go through NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``, or
``cuda.cudart`` in releases before 12.6), as TensorRT's own Python samples do. Every cuda-python call returns
``(error, *values)``; ``cuda_check`` turns a non-zero error into an exception.

An engine runs only on the GPU model and TensorRT version that built it. ``deserialize_cuda_engine`` then
returns None and says why only through the logger, so the logger here keeps the errors and the refusal
names them with the versions on both sides. A Jetson Nano's JetPack 4 has TensorRT 8.2 on Python 3.6, which
neither this API nor slimda (Python >= 3.10) supports: there, time the engine with ``trtexec --loadEngine``
(``slimda-profile --device jetson-nano --host``) and classify with the deployment's ``model.onnx``.

No GPU, TensorRT or cuda-python exists where slimda is developed: this module is tested against a stand-in
of the two APIs that runs the engine's ONNX model (tests/fakes), never against TensorRT itself.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from slimda.errors import ConfigError, SlimdaError

DEVICE_HINT = ("on a Jetson, JetPack installs TensorRT for the system Python (make the environment with "
               "python3 -m venv --system-site-packages) and pip install cuda-python; elsewhere pip install "
               "'slimda[tensorrt]' on a machine with an NVIDIA GPU and driver. Or run the deployment's ONNX file: "
               "slimda predict DIR --model model.onnx")


def import_tensorrt(hint: str = DEVICE_HINT, who: str = "this model"):
    try:
        import tensorrt as trt
    except ImportError as err:
        raise ConfigError(f"{who} needs TensorRT's Python package ({err}): {hint}") from None
    return trt


def import_cudart(hint: str = DEVICE_HINT, who: str = "this model"):
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise ConfigError(f"{who} needs cuda-python for CUDA memory and streams ({err}): {hint}") from None
    return cudart


def cuda_check(result):
    """cuda-python calls return (error, *values); raise on a CUDA error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise SlimdaError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def gpu_name(cudart) -> str:
    try:
        name = cuda_check(cudart.cudaGetDeviceProperties(0)).name
    except Exception:  # noqa: BLE001 - only for an error message
        return "this GPU"
    return name.decode(errors="replace").rstrip("\0") if isinstance(name, bytes) else str(name)


class Engine:
    """A deserialised engine with one execution context, a CUDA stream and device buffers per tensor.

    ``bind(shapes)`` sets the input shapes (a dynamic dimension needs one) and allocates every tensor;
    ``upload(feed)`` copies host arrays in; ``execute()`` enqueues the network; ``run(feed)`` does all three
    and returns the outputs as host arrays. ``built`` (the manifest's artefact notes: ``tensorrt_version``,
    ``built_on``) only makes a refusal clearer; ``hint`` and ``who`` say how to install what is missing."""

    def __init__(self, serialized: bytes, source: str = "the engine", built: Mapping[str, object] | None = None,
                 hint: str = DEVICE_HINT, who: str = "this model") -> None:
        trt = self.trt = import_tensorrt(hint, who)
        self.cudart = import_cudart(hint, who)
        errors: list[str] = []

        severity = trt.ILogger.Severity

        class KeepErrors(trt.ILogger):  # deserialize_cuda_engine tells why it failed only to its logger
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, level, msg) -> None:
                if level in (severity.INTERNAL_ERROR, severity.ERROR):
                    errors.append(str(msg))
                if level in (severity.INTERNAL_ERROR, severity.ERROR, severity.WARNING):  # as trt.Logger(WARNING)
                    print(f"[TensorRT] {msg}", file=sys.stderr)

        self.logger = KeepErrors()
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            built = built or {}
            made = (f"built with TensorRT {built.get('tensorrt_version') or '(version not recorded)'}"
                    f"{' on ' + str(built['built_on']) if built.get('built_on') else ''}")
            raise SlimdaError(
                f"TensorRT {trt.__version__} on {gpu_name(self.cudart)} cannot load {source} ({made}): "
                f"{'; '.join(errors) or 'no reason given'}. An engine runs only on the GPU model and TensorRT "
                "version that built it: deploy again for this device (the engine is built there), or run the "
                "deployment's ONNX file (slimda predict DIR --model model.onnx)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = cuda_check(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}  # name -> (pointer, shape, dtype)

    def input_shape(self, name: str | None = None) -> tuple[int, ...]:
        """An input's shape as built (-1 where the engine takes any size)."""
        return tuple(int(d) for d in self.engine.get_tensor_shape(name or self.inputs[0]))

    def bind(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Set the inputs' shapes and give every tensor a device buffer of its size (kept while they fit)."""
        for name in self.inputs:
            shape = tuple(int(d) for d in shapes.get(name, self.input_shape(name)))
            if any(d < 0 for d in shape):
                raise SlimdaError(f"input {name} of the engine takes any size {shape}: give its shape")
            self.context.set_input_shape(name, shape)
        for name in self.inputs + self.outputs:
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            held = self.buffers.get(name)
            if held and held[1] == shape and held[2] == dtype:
                continue
            if held:
                self.cudart.cudaFree(held[0])
            pointer = cuda_check(self.cudart.cudaMalloc(max(int(np.prod(shape)) * dtype.itemsize, 1)))
            self.buffers[name] = (pointer, shape, dtype)
            self.context.set_tensor_address(name, int(pointer))

    def upload(self, feed: Mapping[str, np.ndarray]) -> None:
        for name, array in feed.items():
            pointer, shape, dtype = self.buffers[name]
            host = np.ascontiguousarray(array, dtype=dtype).reshape(shape)
            cuda_check(self.cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes,
                                                   self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            cuda_check(self.cudart.cudaStreamSynchronize(self.stream))  # host may be freed after return

    def execute(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise SlimdaError("TensorRT's execute_async_v3 failed (see its log above)")

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs for host inputs ``feed`` (each input's shape is its array's)."""
        self.bind({name: tuple(np.shape(a)) for name, a in feed.items()})
        self.upload(feed)
        self.execute()
        outputs = {}
        for name in self.outputs:
            pointer, shape, dtype = self.buffers[name]
            host = np.empty(shape, dtype)
            cuda_check(self.cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                                   self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
            outputs[name] = host
        cuda_check(self.cudart.cudaStreamSynchronize(self.stream))
        return outputs

    def close(self) -> None:
        for pointer, _shape, _dtype in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers = {}
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter teardown: the CUDA context may be gone
            pass
