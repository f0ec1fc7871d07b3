"""Tiny ONNX models for the profiler tests, built with onnx.helper (no torch). No tests in this file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_onnx(path: Path, batch: int | str = 1, size: int = 16) -> Path:
    """Conv(3->8, 3x3) + Relu + GlobalAveragePool + Flatten + Gemm(8->10); input batch x 3 x size x size.

    ``batch`` may be a name (``"N"``) for a symbolic batch dimension.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(np.zeros(8, np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "G"),
        numpy_helper.from_array(np.zeros(10, np.float32), "GB"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "GB"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def fast_options(**overrides):
    """Short measurements: the test machine has 2 shared cores."""
    from slimda.profilers.measurement import MeasureOptions

    base = dict(warmup=2, min_runs=20, min_time_s=0.05, max_time_s=10.0)
    base.update(overrides)
    return MeasureOptions(**base)
