"""The ``tensorrt`` device: TensorRT's Python API on this host's NVIDIA GPU.

Written against the TensorRT 10 Python API: ``Builder`` / ``OnnxParser`` / ``IBuilderConfig``
(``set_memory_pool_limit``, ``BuilderFlag.FP16``), ``build_serialized_network``, ``Runtime``, tensors
addressed by name (``set_tensor_address``, ``set_input_shape``) and ``execute_async_v3`` on a CUDA stream.
Each run is timed with a pair of CUDA events around ``execute_async_v3`` (GPU time of the network, like
trtexec's ``GPU Compute Time``). CUDA calls go through NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``,
or ``cuda.cudart`` in older releases), as TensorRT's own Python samples do; the engine is loaded and fed by
``slimda.runtime.tensorrt.Engine``, the code that runs it on a device.

TensorRT 11 removed the precision builder flags (strongly typed networks only); there fp16 needs an fp16
model (ModelOpt AutoCast), which this module checks instead of setting a flag that no longer exists.
Neither TensorRT nor a GPU is available where slimda is developed: this path is exercised only on a
machine that has them; without ``tensorrt`` it raises a ``ConfigError`` saying how to install it. The
deployed artefact is the engine this host's builder makes.
"""

from __future__ import annotations

from pathlib import Path

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.base import (
    Artifact,
    Backend,
    Measurement,
    check_artifact_kind,
    host_name,
    join_notes,
    loop_note,
    timed_fields,
)
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import BF16, FP16, FP32, INT8, DeviceProfile
from slimda.profilers.onnxinfo import check_int8_model, input_specs, random_feed, specs_text
from slimda.profilers.stats import compute_stats
from slimda.runtime import tensorrt as runtime_tensorrt
from slimda.tables import atomic_output

RUNTIME = "tensorrt-python"

INSTALL_HINT = ("install NVIDIA's TensorRT and CUDA Python wheels on a machine with an NVIDIA GPU and driver: "
                "pip install --extra-index-url https://pypi.nvidia.com tensorrt cuda-python "
                "(or pip install 'slimda[tensorrt]' cuda-python); on a Jetson use the device profiles "
                "(jetson-nano, jetson-orin-nano, jetson-agx-orin) with --host instead")


def import_tensorrt():
    return runtime_tensorrt.import_tensorrt(INSTALL_HINT, "the tensorrt device")


def import_cudart():
    return runtime_tensorrt.import_cudart(INSTALL_HINT, "the tensorrt device")


def build_serialized_engine(onnx_path: str | Path, precision: str = FP16, workspace_mib: int = 1024) -> bytes:
    """Parse the ONNX file and build a serialised engine (``fp16`` sets ``BuilderFlag.FP16`` before TRT 11)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SlimdaError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    model_precision = check_int8_model(onnx_path, precision, "tensorrt")
    if precision == INT8 and hasattr(trt.BuilderFlag, "INT8"):  # explicit quantization: scales in the model
        config.set_flag(trt.BuilderFlag.INT8)
        if has_fp16_flag:
            config.set_flag(trt.BuilderFlag.FP16)
    elif precision == FP16 and has_fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == BF16 and hasattr(trt.BuilderFlag, "BF16"):
        config.set_flag(trt.BuilderFlag.BF16)
    elif precision != FP32 and not has_fp16_flag and model_precision != precision:
        raise ConfigError(f"TensorRT {trt.__version__} builds strongly typed networks only: convert the model "
                          f"to {precision} offline (python -m modelopt.onnx.autocast) or ask for fp32")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SlimdaError(f"TensorRT failed to build an engine for {onnx_path}")
    return bytes(serialized)


def time_engine(serialized: bytes, feed: dict, shapes: dict, opts: MeasureOptions) -> tuple[list[float], bool]:
    """Per-run GPU times (ms) of ``execute_async_v3``, measured with CUDA events, after warm-up: the engine
    loaded as ``slimda predict`` loads it on a device."""
    engine = runtime_tensorrt.Engine(serialized, hint=INSTALL_HINT, who="the tensorrt device")
    cudart, check = engine.cudart, runtime_tensorrt.cuda_check
    try:
        engine.bind(shapes)
        engine.upload(feed)
        start, end = check(cudart.cudaEventCreate()), check(cudart.cudaEventCreate())

        def run_once() -> float:
            check(cudart.cudaEventRecord(start, engine.stream))
            engine.execute()
            check(cudart.cudaEventRecord(end, engine.stream))
            check(cudart.cudaEventSynchronize(end))
            return float(check(cudart.cudaEventElapsedTime(start, end)))

        return _event_loop(run_once, opts)
    finally:
        engine.close()


def _event_loop(run_once, opts: MeasureOptions) -> tuple[list[float], bool]:
    """Like ``stats.timed_runs`` but the timings come from CUDA events, not the host clock."""
    import time

    limits = opts.limits()
    for _ in range(limits.warmup):
        run_once()
    latencies: list[float] = []
    start = time.perf_counter()
    while True:
        latencies.append(run_once())
        elapsed = time.perf_counter() - start
        if len(latencies) >= limits.min_runs and elapsed >= limits.min_time_s:
            return latencies, True
        if len(latencies) >= limits.max_runs or elapsed >= limits.max_time_s:
            return latencies, False


class TensorRTBackend(Backend):
    """The ``tensorrt`` device on this host's GPU (with an ssh host, ``TrtexecBackend`` serves it)."""

    name = "tensorrt-python"

    def handles(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        return device.runtime == RUNTIME

    def measure(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                artifact: Artifact | None = None) -> Measurement:
        trt = import_tensorrt()
        import_cudart()
        check_artifact_kind(artifact, ("tensorrt-engine",), self.name)
        precision = options.precision_for(device)
        specs = input_specs(path, options.batch, options.resolution)
        # the engine that ships, deserialised as a device loads it; else one built from the ONNX file
        serialized = (artifact.path.read_bytes() if artifact else
                      build_serialized_engine(path, precision, options.tensorrt.workspace_mib))
        latencies, complete = time_engine(serialized, random_feed(specs, options.seed),
                                          {s.name: s.shape for s in specs}, options)
        return Measurement(
            device=device.name, runtime=RUNTIME, runtime_version=trt.__version__, precision=precision,
            threads=None, batch=options.batch, input_shape=specs_text(specs), host=host_name(),
            stats=compute_stats(latencies), **timed_fields(artifact.path if artifact else None),
            notes=join_notes("CUDA events around execute_async_v3 (GPU time)", loop_note(complete, options)),
        )

    def build_artifact(self, onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                       ort_platform: str = "arm") -> Artifact:
        precision = options.precision_for(device)
        engine = build_serialized_engine(onnx_path, precision, options.tensorrt.workspace_mib)
        final = out_dir / "model.engine"
        with atomic_output(final) as partial:
            partial.write_bytes(engine)
        return Artifact("tensorrt-engine", final, notes={"tensorrt_version": import_tensorrt().__version__,
                                                         "precision": precision})
