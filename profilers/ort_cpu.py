"""ONNX Runtime on the CPU: ``CPUExecutionProvider`` with fixed intra-op threads.

One inter-op thread and sequential execution, so the only parallelism is the ``threads`` the profile
fixes; all graph optimisations on (what a deployment would use). Inputs are random data of the model's
shape with the batch dimension set; they are built once, outside the timed loop.
"""

from __future__ import annotations

from pathlib import Path

from slimda.errors import ConfigError
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.measurement import Measurement, MeasureOptions, clock_notes, host_name, join_notes
from slimda.profilers.onnxinfo import InputSpec, input_specs, random_feed, shape_text
from slimda.profilers.stats import compute_stats, timed_runs


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


def specs_text(specs: list[InputSpec]) -> str:
    """``1x3x16x16`` for one input, ``a:1x3;b:1x7`` for several."""
    if len(specs) == 1:
        return shape_text(specs[0].shape)
    return ";".join(f"{s.name}:{shape_text(s.shape)}" for s in specs)


def time_session(model_path: Path, specs: list[InputSpec], threads: int, opts: MeasureOptions):
    """Create the session, run the measurement loop; returns (stats, loop_complete)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])
    feed = random_feed(specs, opts.seed)
    latencies, complete = timed_runs(lambda: session.run(None, feed), opts.limits())
    return compute_stats(latencies), complete


def loop_note(complete: bool, opts: MeasureOptions) -> str:
    if complete:
        return f"loop=warmup {opts.warmup}, >= {opts.min_runs} runs and >= {opts.min_time_s:g} s"
    return (f"loop stopped by max_runs={opts.max_runs}/max_time_s={opts.max_time_s:g} before reaching "
            f"min_runs={opts.min_runs} and min_time_s={opts.min_time_s:g}")


def measure_onnxruntime(path: Path, device: DeviceProfile, opts: MeasureOptions) -> Measurement:
    import onnxruntime as ort

    precision = opts.precision_for(device)
    if precision != "fp32":
        raise ConfigError(f"{device.name} measures fp32 only (the CPU execution provider has no general "
                          f"{precision} kernels); export an fp32 model or use cpu-openvino for {precision}")
    threads = opts.threads_for(device) or 1
    specs = input_specs(path, opts.batch, opts.resolution)
    stats, complete = time_session(path, specs, threads, opts)
    return Measurement(
        device=device.name, runtime="onnxruntime", runtime_version=ort.__version__, precision="fp32",
        threads=threads, batch=opts.batch, input_shape=specs_text(specs), host=host_name(), stats=stats,
        notes=join_notes("CPUExecutionProvider, inter_op=1, sequential, ORT_ENABLE_ALL",
                         loop_note(complete, opts), clock_notes()),
    )
