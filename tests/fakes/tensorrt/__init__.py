"""Stand-in for TensorRT's Python API (see tests/fakes/README.md). A serialised engine is
``b"FAKE-TRT <version>\\n" + <ONNX model>``; one serialised by another version is refused through the
logger as TensorRT refuses it (``deserialize_cuda_engine`` returns None)."""

from __future__ import annotations

import ctypes

import numpy as np

__version__ = "10.3.0"
MAGIC = b"FAKE-TRT "


class ILogger:
    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self) -> None:
        pass

    def log(self, severity, msg) -> None:
        pass


class Logger(ILogger):
    WARNING = ILogger.Severity.WARNING

    def __init__(self, min_severity=WARNING) -> None:
        super().__init__()


class TensorIOMode:
    NONE, INPUT, OUTPUT = "NONE", "INPUT", "OUTPUT"


class DataType:
    FLOAT, HALF = "FLOAT", "HALF"


def nptype(dtype):
    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[dtype]


def serialize(onnx_bytes: bytes, version: str = __version__) -> bytes:
    """What the tests write as a ``model.engine``."""
    return MAGIC + version.encode() + b"\n" + onnx_bytes


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        header, _, model = bytes(data).partition(b"\n")
        if not header.startswith(MAGIC):
            self.logger.log(ILogger.Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: "
                            "Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic Tag does "
                            "not match)")
            return None
        version = header[len(MAGIC):].decode()
        if version != __version__:
            self.logger.log(ILogger.Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::42] Error Code 1: "
                            "Serialization (Serialization assertion stdVersionRead == kSERIALIZATION_VERSION "
                            f"failed.Version tag does not match. Note: Current Version: {__version__}, Serialized "
                            f"Engine Version: {version})")
            return None
        return ICudaEngine(model)


class ICudaEngine:
    def __init__(self, model: bytes) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        self.names = [t.name for t in self.session.get_inputs()] + [t.name for t in self.session.get_outputs()]
        self.input_names = {t.name for t in self.session.get_inputs()}
        self.shapes = {t.name: tuple(d if isinstance(d, int) else -1 for d in t.shape)
                       for t in [*self.session.get_inputs(), *self.session.get_outputs()]}

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return TensorIOMode.INPUT if name in self.input_names else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def get_tensor_dtype(self, name: str) -> str:
        return DataType.FLOAT

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine, self.input_shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name: str, shape) -> bool:
        built = self.engine.shapes[name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(built) or any(b not in (-1, s) for b, s in zip(built, shape)):
            raise AssertionError(f"shape {shape} does not fit input {name} {built}")
        self.input_shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.input_names:
            if name not in self.input_shapes:
                raise AssertionError(f"the shape of input {name} is asked before set_input_shape")
            return self.input_shapes[name]
        batch = next(iter(self.input_shapes.values()))[0]
        return tuple(batch if d == -1 else d for d in self.engine.shapes[name])

    def set_tensor_address(self, name: str, address: int) -> bool:
        from cuda.bindings import runtime

        if not runtime.is_device(address):
            raise AssertionError(f"{name} is bound to {address:#x}, which cudaMalloc did not return")
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        feed = {}
        for name in self.engine.input_names:
            shape = self.input_shapes[name]
            size = int(np.prod(shape)) * 4
            feed[name] = np.frombuffer(ctypes.string_at(self.addresses[name], size), np.float32).reshape(shape)
        outputs = self.engine.session.run(None, feed)
        for name, value in zip([t.name for t in self.engine.session.get_outputs()], outputs):
            value = np.ascontiguousarray(value, np.float32)
            ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
        return True
