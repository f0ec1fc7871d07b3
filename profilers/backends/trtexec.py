"""TensorRT's ``trtexec`` on a Jetson (or any NVIDIA box) over ssh: timing and engine builds.

Nothing of ours runs on the device: the ONNX file is copied there, ``trtexec`` builds and times it, and
its console summary (plus the per-query JSON of ``--exportTimes`` when it can be read back) becomes the
``LatencyStats``. Flags and log formats per TensorRT version: ``trtexec_cli``. The deployed artefact is a
serialised engine built on the device (engines only run on the GPU and TensorRT version that built them).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from pathlib import Path

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.backends.trtexec_cli import (
    METRIC_LINES,
    TrtVersion,
    parse_times_json,
    parse_trtexec_output,
    parse_version,
    shapes_arg,
    trtexec_command,
    version_from_output,
    version_text,
)
from slimda.profilers.base import (
    Artifact,
    Backend,
    Measurement,
    MeasurementError,
    check_artifact_kind,
    join_notes,
    timed_fields,
)
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import FP16, INT8, JETPACK_TRTEXEC, DeviceProfile, get_device
from slimda.profilers.onnxinfo import InputSpec, activation_format, check_int8_model, input_specs, specs_text
from slimda.profilers.ssh import SSHTarget, remote_model_path, upload_once
from slimda.profilers.stats import compute_stats
from slimda.profilers.transport import CommandResult, TransportError
from slimda.tables import atomic_output

RUNTIME = "tensorrt-trtexec"


def missing_trtexec_message(host: str, trtexec: str, command: str) -> str:
    return (f"trtexec not found at {trtexec} on {host} (command: {command}). JetPack installs it at "
            f"{JETPACK_TRTEXEC} (apt package tensorrt / libnvinfer-bin); pass --trtexec PATH if it lives "
            "elsewhere on the device.")


def _is_missing(result: CommandResult, trtexec: str) -> bool:
    text = result.output
    return result.returncode == 127 or (
        result.returncode != 0 and trtexec in text and ("not found" in text or "No such file" in text))


def detect_trt_version(target: SSHTarget, trtexec: str = JETPACK_TRTEXEC) -> TrtVersion:
    """Ask the device: the banner of ``trtexec --help``, else the ``tensorrt`` Debian package version."""
    result = target.run([trtexec, "--help"], timeout=120)
    if _is_missing(result, trtexec):
        raise TransportError(missing_trtexec_message(target.host, trtexec, result.command))
    version = version_from_output(result.output)
    if version:
        return version
    for package in ("tensorrt", "libnvinfer-bin"):
        dpkg = target.run(["dpkg-query", "-W", "-f=${Version}", package], timeout=60)
        if dpkg.returncode == 0 and dpkg.stdout.strip():
            return parse_version(dpkg.stdout.strip())
    raise SlimdaError(f"cannot tell the TensorRT version on {target.host} (no banner from {trtexec} --help, "
                      "no tensorrt package): pass --trt-version, e.g. --trt-version 8.2")


def require_host(device: DeviceProfile, opts: MeasureOptions) -> SSHTarget:
    """The device's ssh target; without one, say how to reach a Jetson (the one place this is checked)."""
    if opts.ssh is None:
        raise ConfigError(
            f"{device.name} is profiled on the device itself over ssh: add --host user@jetson (key login "
            f"without a password; --port/--identity if needed). trtexec is expected at "
            f"{opts.tensorrt.trtexec_path} (JetPack's {JETPACK_TRTEXEC}; --trtexec PATH otherwise), and "
            "--trt-version skips version detection. Nothing else needs to be installed on the device.")
    return opts.ssh.target()


@dataclass(frozen=True)
class _Plan:
    target: SSHTarget
    version: TrtVersion
    precision: str
    remote_onnx: str
    shapes: str | None
    specs: list[InputSpec]
    notes: str


def _plan(path: Path, device: DeviceProfile, opts: MeasureOptions, upload: bool = True) -> _Plan:
    """What running trtexec for ``path`` needs; the ONNX file is copied to the device unless ``upload`` is
    false (an engine that ships is timed instead)."""
    if not path.is_file():
        raise SlimdaError(f"ONNX file not found: {path}")
    target = require_host(device, opts)
    specs = input_specs(path, opts.batch, opts.resolution)
    trt = opts.tensorrt
    notes = ""
    if trt.trt_version:
        version = parse_version(trt.trt_version)
    else:
        try:
            version = detect_trt_version(target, trt.trtexec_path)
        except TransportError:
            raise
        except SlimdaError:
            if not device.trt_version:
                raise
            version = parse_version(device.trt_version)  # e.g. the Nano's last JetPack ships TensorRT 8.2
            notes = f"TensorRT version not detected; assumed {device.trt_version} for {device.name}"
    requested = opts.precision_for(device)
    model_precision = check_int8_model(path, requested, device.name)
    if requested == INT8 and activation_format(path) == "uint8":
        raise ConfigError(f"TensorRT's explicit quantization takes int8 symmetric activations, and {path.name} "
                          f"quantizes them to uint8 (the CPU runtimes' format): quantize it for {device.name} "
                          f"with activations='int8' (its profile's default)")
    if version[0] >= 11:
        if requested != model_precision:
            raise ConfigError(
                f"TensorRT {version_text(version)} builds strongly typed networks only (no --fp16/--bf16): "
                f"the model is {model_precision} but {requested} was asked. Convert it offline "
                "(python -m modelopt.onnx.autocast --onnx_path model.onnx) or ask for --precision "
                f"{model_precision}.")
        notes = join_notes(notes, "TensorRT 11: strongly typed, precision from the model")
    elif requested == INT8:
        notes = join_notes(notes, "--int8 --fp16: int8 where the model's Q/DQ nodes say, fp16 elsewhere")
    elif requested == FP16:
        notes = join_notes(notes, "--fp16 allows fp16 kernels; TensorRT keeps fp32 where faster or required")
    remote_onnx = remote_model_path(path, opts.ssh.remote_dir)  # type: ignore[union-attr]  # require_host
    if upload:
        target.put(path, remote_onnx)
    return _Plan(target, version, requested, remote_onnx, shapes_arg(specs), specs, notes)


def _run_checked(plan: _Plan, argv: list[str], opts: MeasureOptions, device: DeviceProfile) -> CommandResult:
    trtexec = opts.tensorrt.trtexec_path
    result = plan.target.run(argv, timeout=opts.ssh.timeout_s)  # type: ignore[union-attr]  # require_host
    if _is_missing(result, trtexec):
        raise TransportError(missing_trtexec_message(plan.target.host, trtexec, result.command))
    if result.returncode != 0:
        raise MeasurementError(f"{device.name}: trtexec failed on {plan.target.host} (exit {result.returncode}): "
                               f"{result.command}\n{result.tail()}")
    return result


def measure_trtexec(path: Path, device: DeviceProfile, opts: MeasureOptions,
                    engine: Path | None = None) -> Measurement:
    """Build and time ``path`` with trtexec on the ssh host; statistics of ``opts.tensorrt.metric``.

    With ``engine`` (the serialised engine a deployment ships), nothing is built: that very file is copied to
    the device under a name made from its content and timed with ``--loadEngine``, so the kernels timed are
    the kernels that ship (TensorRT picks them by timing, so a second build can differ).
    """
    plan = _plan(path, device, opts, upload=engine is None)
    trt = opts.tensorrt
    times_file = f"{plan.remote_onnx}.{uuid.uuid4().hex[:8]}.times.json"
    common = dict(warmup_ms=trt.warmup_ms, duration_s=max(1, math.ceil(opts.min_time_s)), iterations=opts.min_runs,
                  export_times=times_file, shapes=plan.shapes)
    if engine is None:
        argv = trtexec_command(trt.trtexec_path, plan.version, onnx=plan.remote_onnx, precision=plan.precision,
                               workspace_mib=trt.workspace_mib, **common)
    else:
        remote_dir = opts.ssh.remote_dir  # type: ignore[union-attr]  # _plan checked there is a host
        remote_engine = upload_once(plan.target, engine, remote_dir)
        argv = trtexec_command(trt.trtexec_path, plan.version, load_engine=remote_engine, **common)
    result = _run_checked(plan, argv, opts, device)
    summary = parse_trtexec_output(result.output)
    _, estimated = summary.runs()
    stats, source = summary.to_stats(trt.metric), "trtexec summary"
    times_text = plan.target.read_text(times_file)
    if times_text:
        try:
            values = parse_times_json(times_text, trt.metric, summary.queries)
            if values:
                stats, source, estimated = compute_stats(values), "per-query --exportTimes", False
        except (ValueError, KeyError, TypeError):
            pass
    plan.target.run(["rm", "-f", times_file], timeout=60)
    version = summary.version or plan.version
    return Measurement(
        device=device.name, runtime=RUNTIME, runtime_version=version_text(version),
        precision=plan.precision, threads=None, batch=opts.batch, input_shape=specs_text(plan.specs),
        host=plan.target.host, stats=stats, **timed_fields(engine),
        notes=join_notes(f"metric={METRIC_LINES[trt.metric]}", f"stats from {source}",
                         f"the shipped engine {engine.name}, loaded" if engine else "engine built from the ONNX file",
                         "runs estimated from throughput x walltime" if estimated else "", plan.notes,
                         f"command={result.command}"),
    )


@dataclass(frozen=True)
class EngineBuild:
    """A TensorRT engine built on the device; ``local_path`` is set when it was copied back."""

    remote_path: str
    local_path: Path | None
    trt_version: str
    precision: str
    command: str
    log_tail: str


def build_engine(onnx_path: str | Path, device: DeviceProfile | str, options: MeasureOptions | None = None,
                 remote_engine: str | None = None, local_engine: str | Path | None = None) -> EngineBuild:
    """Build a serialised engine with ``trtexec --saveEngine`` on the device (no timing), for deployment.

    The engine stays at ``remote_engine`` (default: next to the uploaded ONNX, ``.engine``) and is copied
    to ``local_engine`` when given. Engines are specific to the GPU and TensorRT version that built them.
    """
    dev = get_device(device)
    opts = options or MeasureOptions()
    plan = _plan(Path(onnx_path), dev, opts)
    engine = remote_engine or str(Path(plan.remote_onnx).with_suffix(".engine"))
    argv = trtexec_command(opts.tensorrt.trtexec_path, plan.version, onnx=plan.remote_onnx,
                           precision=plan.precision, workspace_mib=opts.tensorrt.workspace_mib, save_engine=engine,
                           shapes=plan.shapes, build_only=True)
    result = _run_checked(plan, argv, opts, dev)
    local = plan.target.get(engine, local_engine) if local_engine else None
    return EngineBuild(engine, local, version_text(version_from_output(result.output) or plan.version),
                       plan.precision, result.command, result.tail(5))


class TrtexecBackend(Backend):
    """Jetsons (always over ssh), and the ``tensorrt`` device given an ssh host (trtexec on that box)."""

    name = "trtexec"

    def handles(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        return device.runtime == RUNTIME or (device.runtime.startswith("tensorrt") and options.ssh is not None)

    def check(self, device: DeviceProfile, options: MeasureOptions) -> None:
        require_host(device, options)

    def measure(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                artifact: Artifact | None = None) -> Measurement:
        check_artifact_kind(artifact, ("tensorrt-engine",), self.name)
        return measure_trtexec(path, device, options, artifact.path if artifact else None)

    def build_artifact(self, onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                       ort_platform: str = "arm") -> Artifact:
        final = out_dir / "model.engine"
        with atomic_output(final) as partial:
            build = build_engine(onnx_path, device, options, local_engine=partial)
        return Artifact("tensorrt-engine", final, notes={
            "tensorrt_version": build.trt_version, "precision": build.precision, "built_on": options.host or "",
            "remote_engine": build.remote_path, "build_command": build.command})
