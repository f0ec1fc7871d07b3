"""ONNX Runtime on the CPU: ``CPUExecutionProvider`` with fixed intra-op threads.

One inter-op thread and sequential execution, so the only parallelism is the ``threads`` the profile
fixes; all graph optimisations on (what a deployment would use). Inputs are random data of the model's
shape with the batch dimension set; they are built once, outside the timed loop. The deployed artefact is
the ONNX file itself.
"""

from __future__ import annotations

from pathlib import Path

from slimda.profilers.base import Artifact, LocalBackend, LocalModel, check_artifact_kind, timed_fields
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.onnxinfo import InputSpec, check_int8_model, input_specs, random_feed, specs_text


def session_options(threads: int):
    """``SessionOptions`` with ``threads`` intra-op threads, one inter-op thread, sequential, ORT_ENABLE_ALL."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def open_session(model_path: Path, specs: list[InputSpec], threads: int, opts: MeasureOptions):
    """A callable that runs a new session once on random inputs of ``specs`` (built once)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])
    feed = random_feed(specs, opts.seed)
    return lambda: session.run(None, feed)


class OnnxRuntimeBackend(LocalBackend):
    """``cpu-onnxruntime`` on this host (or, through the worker, on an ssh host)."""

    name = "onnxruntime-cpu"
    runtime = "onnxruntime"

    def open_local(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                   artifact: Artifact | None = None) -> LocalModel:
        import onnxruntime as ort

        check_artifact_kind(artifact, ("onnx",), self.name)
        precision = options.precision_for(device)
        model_precision = check_int8_model(path, precision, device.name)
        threads = options.threads_for(device) or 1
        specs = input_specs(path, options.batch, options.resolution)
        loaded = artifact.path if artifact else path  # the ONNX file is this runtime's artefact
        run = open_session(loaded, specs, threads, options)
        return LocalModel(run, dict(device=device.name, runtime="onnxruntime", runtime_version=ort.__version__,
                                    precision=model_precision, threads=threads, batch=options.batch,
                                    input_shape=specs_text(specs), **timed_fields(artifact and loaded)),
                          ("CPUExecutionProvider, inter_op=1, sequential, ORT_ENABLE_ALL",))
