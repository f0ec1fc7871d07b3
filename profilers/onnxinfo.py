"""What a profiler needs to know about an ONNX file: its inputs with concrete shapes, random feeds.

Shapes: the first dimension is the batch (set from the options when it is symbolic); the last two of a
4-D input are height and width (set from ``resolution`` when symbolic). Any other symbolic dimension, or a
fixed one that contradicts the options, is a clear error rather than a silently different measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.devices import BF16, FP16, FP32, INT8


@dataclass(frozen=True)
class InputSpec:
    """One model input with every dimension fixed."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    dynamic: bool  # whether the ONNX file left any dimension symbolic


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """``(1, 3, 16, 16)`` -> ``"1x3x16x16"``."""
    return "x".join(str(int(d)) for d in shape)


def specs_text(specs: list[InputSpec]) -> str:
    """``1x3x16x16`` for one input, ``a:1x3;b:1x7`` for several."""
    if len(specs) == 1:
        return shape_text(specs[0].shape)
    return ";".join(f"{s.name}:{shape_text(s.shape)}" for s in specs)


def load_model(onnx_path: str | Path):
    """The ONNX graph (weights not needed), with a clear error for a missing or corrupt file."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise SlimdaError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        raise SlimdaError(f"cannot read ONNX file {path}: {type(err).__name__}: {err}") from None


def _resolve_dim(i: int, rank: int, dim, batch: int, resolution: tuple[int, int] | None, name: str) -> int:
    fixed = dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
    if i == 0:
        if fixed is not None and fixed != batch:
            raise ConfigError(f"input {name!r} has a fixed batch of {fixed}, not {batch}: "
                              f"use --batch {fixed} or export the model with a dynamic batch dimension")
        return batch
    if rank == 4 and i >= 2:
        wanted = resolution[i - 2] if resolution else None
        if fixed is None:
            if wanted is None:
                raise ConfigError(f"input {name!r} has a symbolic spatial size: give --resolution HxW")
            return wanted
        if wanted is not None and wanted != fixed:
            raise ConfigError(f"input {name!r} is fixed at {fixed} on axis {i}, but --resolution asks for "
                              f"{wanted}: export the model at that resolution")
        return fixed
    if fixed is None:
        raise ConfigError(f"input {name!r} has a symbolic dimension on axis {i} ({dim.dim_param!r}) that the "
                          "profiler cannot choose: export the model with fixed shapes")
    return fixed


def input_specs(onnx_path: str | Path, batch: int = 1,
                resolution: tuple[int, int] | None = None) -> list[InputSpec]:
    """The model's real inputs (initializers excluded) with concrete shapes."""
    from onnx import helper

    model = load_model(onnx_path)
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = list(tensor.shape.dim)
        shape = tuple(_resolve_dim(i, len(dims), d, batch, resolution, value.name) for i, d in enumerate(dims))
        dynamic = any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        specs.append(InputSpec(value.name, shape, dtype, dynamic))
    if not specs:
        raise SlimdaError(f"ONNX file {onnx_path} has no inputs to feed")
    return specs


def random_feed(specs: list[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the given shapes: standard normal floats, zeros for integers and booleans."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            feed[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        else:
            feed[spec.name] = np.zeros(spec.shape, dtype=dtype)
    return feed


def float_precision(onnx_path: str | Path) -> str:
    """``fp16`` when the model stores float16 weights, ``bf16`` for bfloat16, else ``fp32``."""
    return _float_precision_of(load_model(onnx_path))


def _float_precision_of(model) -> str:  # noqa: ANN001 - an onnx.ModelProto
    from onnx import TensorProto

    types = {t.data_type for t in model.graph.initializer}
    if TensorProto.FLOAT16 in types:
        return FP16
    if TensorProto.BFLOAT16 in types:
        return BF16
    return FP32


QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger"})


def is_quantized(onnx_path: str | Path) -> bool:
    """Whether the model holds quantization (QDQ pairs or integer operators): an int8 model."""
    return model_precision(onnx_path) == INT8


def model_precision(onnx_path: str | Path) -> str:
    """``int8`` for a quantized model, else the precision of its float weights (``float_precision``); the file
    is read once."""
    model = load_model(onnx_path)
    if any(node.op_type in QUANTIZED_OPS for node in model.graph.node):
        return INT8
    return _float_precision_of(model)


def activation_format(onnx_path: str | Path) -> str | None:
    """``int8`` or ``uint8``: the type the model's QuantizeLinear nodes quantize to (None when none has a
    constant zero point to read it from)."""
    from onnx import TensorProto, numpy_helper

    model = load_model(onnx_path)
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in constants:
            kind = constants[node.input[2]].data_type
            if kind in (TensorProto.INT8, TensorProto.UINT8):
                return "int8" if kind == TensorProto.INT8 else "uint8"
            return str(numpy_helper.to_array(constants[node.input[2]]).dtype)
    return None


def check_int8_model(onnx_path: str | Path, precision: str, device: str) -> str:
    """int8 is a property of the model (static QDQ quantization), not a runtime switch: refuse a float model
    asked to run int8. Returns the model's own precision (``model_precision``), what a row records."""
    found = model_precision(onnx_path)
    if precision == INT8 and found != INT8:
        raise ConfigError(f"{device} runs int8 from a quantized model, and {Path(onnx_path).name} has no "
                          f"QuantizeLinear/DequantizeLinear nodes: quantize it first (slimda.export.quantize, "
                          f"calibrated on target images), or ask for fp32")
    return found
