"""Extracted network → ONNX file, checked and compared with PyTorch.

Opset 13 is what TensorRT 8.2 (JetPack 4.6, Jetson Nano) accepts; 18 is the current default for
ONNX Runtime and OpenVINO. Opsets up to 17 go through torch's TorchScript exporter; 18 and later
through the dynamo exporter (torch's default), asked for a single file without external weights.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimda.errors import SlimdaError
from slimda.export.manifest import BATCH_AXIS
from slimda.tables import atomic_output

CURRENT_OPSET = 18
TENSORRT_8_2_OPSET = 13
INPUT_NAME = "input"
OUTPUT_NAME = "scores"


def export_onnx(
    net: nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, ...],
    opset: int = CURRENT_OPSET,
    exporter: str = "auto",
    dynamic_batch: bool = False,
) -> Path:
    """Export ``net`` (eval mode, ``input_shape``) to ``path`` atomically and check the graph.

    ``exporter``: ``"torchscript"``, ``"dynamo"`` or ``"auto"`` (TorchScript below opset 18).
    ``dynamic_batch``: the input's and output's first axis is the symbolic ``batch`` (``input_shape[0]`` is
    only the example); otherwise every axis is fixed.
    """
    import onnx

    if exporter == "auto":
        exporter = "torchscript" if opset < 18 else "dynamo"
    if exporter not in ("torchscript", "dynamo"):
        raise SlimdaError(f"unknown ONNX exporter {exporter!r}; use 'torchscript', 'dynamo' or 'auto'")
    path = Path(path)
    was_training = net.training
    net.eval()
    chatter = io.StringIO()
    try:
        with atomic_output(path) as tmp, torch.no_grad(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")  # deprecation notices of the TorchScript exporter
            torch.onnx.export(
                net,
                (torch.zeros(input_shape),),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=exporter == "dynamo",
                external_data=False,
                **(_dynamic_batch_arguments(exporter) if dynamic_batch else {}),
            )
            onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    except Exception as err:
        log = chatter.getvalue()[-2000:]
        raise SlimdaError(f"ONNX export at opset {opset} ({exporter}) failed: {err}\n{log}") from err
    finally:
        net.train(was_training)
    return path


def _dynamic_batch_arguments(exporter: str) -> dict[str, object]:
    """``torch.onnx.export`` arguments that make the first axis the symbolic ``batch``, per exporter."""
    if exporter == "dynamo":
        return {"dynamic_shapes": ({0: torch.export.Dim("batch")},)}
    return {"dynamic_axes": {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}}}


def embed_metadata(path: str | os.PathLike, props: dict[str, str]) -> None:
    """Write ``props`` into the ONNX file's ``metadata_props`` (atomically; the graph is untouched)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **props})
    with atomic_output(Path(path)) as tmp:
        onnx.save(model, str(tmp))


def onnx_opset(path: str | os.PathLike) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


# Largest accepted difference between ONNX Runtime and PyTorch, in units of the output's scale
# max(1, max|y|). Absolute 1e-4 is below float32 round-off for deep nets with large outputs: for an
# untrained ResNet-50 with outputs near 4, PyTorch fp32 itself is 1.2e-4 away from fp64.
PARITY_TOLERANCE = 1e-4


def parity_error(net: nn.Module, path: str | os.PathLike, x: torch.Tensor) -> float:
    """Largest difference between ``net(x)`` in PyTorch and the ONNX file in ONNX Runtime (CPU),
    divided by the output scale ``max(1, max|net(x)|)``: compare with ``PARITY_TOLERANCE``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    was_training = net.training
    net.eval()
    with torch.no_grad():
        expected = net(x).numpy()
    net.train(was_training)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(np.float32)})[0]
    if got.shape != expected.shape:
        raise SlimdaError(f"{path} outputs shape {got.shape}, PyTorch {expected.shape}")
    scale = max(1.0, float(np.max(np.abs(expected))))
    return float(np.max(np.abs(got - expected))) / scale
