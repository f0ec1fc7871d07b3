"""What every backend shares: the result of a measurement, its CSV row, and the ``Backend`` interface.

A backend is one way of timing an ONNX model: a runtime driven in this process (``LocalBackend``: ONNX
Runtime, OpenVINO, ORT format), or a tool or worker reached over a transport (trtexec over ssh, slimda's
worker over ssh, onnxruntime_perf_test over adb), or TensorRT's builder here. Each says which (device,
options) it serves; the registry in ``slimda.profilers.backends`` asks them in turn.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.stats import LatencyStats, compute_stats, paired_runs, timed_runs

ROW_COLUMNS: tuple[str, ...] = (
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "latency_ms_std", "cv", "runs",
    "device", "runtime", "runtime_version", "precision", "threads", "batch", "input_shape", "host",
    "measured_at", "status", "error", "notes",
)
PAIRED_COLUMNS = ("reference_ms", "vs_reference")  # what ``measure_row(..., reference=...)`` adds


class MeasurementError(SlimdaError):
    """A model could not be measured on the device (the runtime rejected or crashed on it)."""


@dataclass(frozen=True)
class Measurement:
    """One model timed on one device, with the metadata a LUT row records."""

    device: str
    runtime: str
    runtime_version: str
    precision: str
    threads: int | None
    batch: int
    input_shape: str
    host: str
    stats: LatencyStats
    measured_at: str = field(default_factory=lambda: now_iso())
    notes: str = ""
    # the file the runtime loaded and timed, when a deployment's artefact was measured (``timed_fields``)
    timed_file: str = ""
    timed_sha256: str = ""

    def to_row(self) -> dict[str, object]:
        """Flat CSV row with the columns of ``ROW_COLUMNS`` (latencies in ms)."""
        s = self.stats
        return {
            "latency_ms_p50": _num(s.p50), "latency_ms_p90": _num(s.p90), "latency_ms_p99": _num(s.p99),
            "latency_ms_mean": _num(s.mean), "latency_ms_std": _num(s.std), "cv": _num(s.cv), "runs": s.runs,
            "device": self.device, "runtime": self.runtime, "runtime_version": self.runtime_version,
            "precision": self.precision, "threads": "" if self.threads is None else self.threads,
            "batch": self.batch, "input_shape": self.input_shape, "host": self.host,
            "measured_at": self.measured_at, "status": "ok", "error": "", "notes": self.notes,
        }

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stats"] = self.stats.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["stats"] = LatencyStats.from_dict(data["stats"])
        return cls(**fields)

    def with_notes(self, *extra: str) -> Measurement:
        return replace(self, notes=join_notes(self.notes, *extra))


@dataclass(frozen=True)
class PairedMeasurement:
    """A model timed in alternating chunks with a reference: its own statistics, the reference's median over
    the same loop, and ``vs_reference``, the median over chunk pairs of model / reference latency."""

    measurement: Measurement
    reference_ms: float
    vs_reference: float

    def to_row(self) -> dict[str, object]:
        return {**self.measurement.to_row(), "reference_ms": _num(self.reference_ms),
                "vs_reference": _num(self.vs_reference)}


def timed_fields(path: Path | None) -> dict[str, str]:
    """The ``Measurement`` fields naming the file a runtime timed (none when no artefact was asked for)."""
    if path is None:
        return {}
    from slimda.tables import sha256_file

    return {"timed_file": path.name, "timed_sha256": sha256_file(path)}


def check_artifact_kind(artifact: Artifact | None, kinds: tuple[str, ...], backend: str) -> None:
    """Refuse an artefact this runtime does not load (a wrong pairing of device and folder)."""
    if artifact is not None and artifact.kind not in kinds:
        raise ConfigError(f"the {backend} backend loads {' or '.join(kinds)} artefacts, not {artifact.kind} "
                          f"({artifact.path.name})")


def _num(value: float | None) -> object:
    return "" if value is None else round(float(value), 6)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def join_notes(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def host_name() -> str:
    return socket.gethostname()


def clock_notes() -> str:
    """What can make CPU timings drift on this host: CPU model, frequency governor, load average."""
    notes = [f"cpu={_cpu_model()}"]
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor.is_file():
        notes.append(f"governor={governor.read_text().strip()}")
    if hasattr(os, "getloadavg"):
        notes.append(f"loadavg={os.getloadavg()[0]:.2f}")
    notes.append(f"cores={os.cpu_count()}")
    return join_notes(*notes)


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip().replace(";", ",")
    return platform.processor() or platform.machine()


def loop_note(complete: bool, opts: MeasureOptions) -> str:
    if complete:
        return f"loop=warmup {opts.warmup}, >= {opts.min_runs} runs and >= {opts.min_time_s:g} s"
    return (f"loop stopped by max_runs={opts.max_runs}/max_time_s={opts.max_time_s:g} before reaching "
            f"min_runs={opts.min_runs} and min_time_s={opts.min_time_s:g}")


def failure_row(device: str | DeviceProfile, error: BaseException | str, *, runtime: str = "",
                input_shape: str = "", host: str = "", options: MeasureOptions | None = None) -> dict[str, object]:
    """A row for an entry that could not be measured: ``status=failed``, the error, empty numbers."""
    name = device.name if isinstance(device, DeviceProfile) else str(device)
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    row: dict[str, object] = {c: "" for c in ROW_COLUMNS}
    row.update({
        "device": name, "runtime": runtime, "input_shape": input_shape, "host": host or host_name(),
        "measured_at": now_iso(), "status": "failed", "error": " | ".join(str(text).strip().splitlines()),
    })
    if options is not None:
        row["batch"] = options.batch
        row["threads"] = "" if options.threads is None else options.threads
        row["precision"] = options.precision or ""
    return row


@dataclass(frozen=True)
class Artifact:
    """What a backend's ``build_artifact`` produced: the file the runtime loads (plus side files), and how."""

    kind: str  # "onnx", "openvino-ir", "ort", "tensorrt-engine"
    path: Path
    extra_files: tuple[Path, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.path, *self.extra_files)


class Backend(ABC):
    """One way of timing a model on a device (see the module docstring)."""

    name: str

    @abstractmethod
    def handles(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        """Whether this backend serves ``device`` reached as ``options`` say (ssh host, adb serial...)."""

    def check(self, device: DeviceProfile, options: MeasureOptions) -> None:
        """Raise ``ConfigError`` when ``options`` lack what reaching ``device`` needs (before any work)."""
        return None  # nothing to check by default

    @abstractmethod
    def measure(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                artifact: Artifact | None = None) -> Measurement:
        """Time ``path`` once (warm-up, loop, statistics); raises on failure.

        With ``artifact`` (what ``build_artifact`` made from ``path`` and a deployment ships), the runtime
        loads and times that file instead, and the measurement records its name and SHA-256 (``timed_fields``);
        ``path`` still describes the model's inputs and precision.
        """

    def can_pair(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        """Whether ``measure_paired`` works: slimda drives the runtime run by run, here or over ssh."""
        return False

    def measure_paired(self, path: Path, reference: Path, device: DeviceProfile, options: MeasureOptions,
                       artifact: Artifact | None = None) -> PairedMeasurement:
        """Time ``path`` (or ``artifact``, as ``measure``) in alternating chunks with ``reference``; only
        called where ``can_pair``."""
        raise ConfigError(f"{device.name} cannot time two models in turn with the {self.name} backend")

    def build_artifact(self, onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                       ort_platform: str = "arm") -> Artifact:
        """Convert ``onnx_path`` into what this runtime loads, under ``out_dir``."""
        raise SlimdaError(f"no runtime artefact is known for device {device.name} (runtime {device.runtime})")


@dataclass(frozen=True)
class LocalModel:
    """A model loaded in a runtime of this process and ready to run once per ``run()`` call, with what its
    measurement will record. Each local runtime opens models this way; the timing loops are shared."""

    run: Callable[[], object]
    setup: dict[str, object]  # the Measurement fields device ... input_shape (all but host, stats, times, notes)
    notes: tuple[str, ...] = ()

    def measurement(self, stats: LatencyStats, *notes: str) -> Measurement:
        return Measurement(**self.setup, host=host_name(), stats=stats,  # type: ignore[arg-type]
                           notes=join_notes(*self.notes, *notes, clock_notes()))


class LocalBackend(Backend):
    """A Python runtime in this process, serving the devices whose profile names its ``runtime``. It only
    opens models (``open_local``); the timing loop and the paired loop are shared, which is what lets two
    models alternate run by run (and what slimda's worker runs on an ssh host)."""

    runtime: str

    def handles(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        return device.runtime == self.runtime

    def check(self, device: DeviceProfile, options: MeasureOptions) -> None:
        if options.adb is not None:
            raise ConfigError(f"--adb is for the ort-mobile device, not {device.name}")

    @abstractmethod
    def open_local(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                   artifact: Artifact | None = None) -> LocalModel:
        """Load ``path`` (or its ``artifact``, see ``Backend.measure``) in this runtime with the device's
        threads and precision."""

    def measure(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                artifact: Artifact | None = None) -> Measurement:
        model = self.open_local(path, device, options, artifact)
        latencies, complete = timed_runs(model.run, options.limits())
        return model.measurement(compute_stats(latencies), loop_note(complete, options))

    def can_pair(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        return options.adb is None

    def measure_paired(self, path: Path, reference: Path, device: DeviceProfile, options: MeasureOptions,
                       artifact: Artifact | None = None) -> PairedMeasurement:
        model = self.open_local(path, device, options, artifact)
        ref = self.open_local(reference, device, options)
        runs = paired_runs(model.run, ref.run, options.limits())
        reference_stats = compute_stats(runs.reference)
        measured = model.measurement(
            compute_stats(runs.latencies), loop_note(runs.complete, options),
            f"paired with {reference.name} in {len(runs.ratios)} alternating chunk pairs "
            f"(reference median {reference_stats.p50:.4f} ms)")
        return PairedMeasurement(measured, reference_stats.p50, runs.ratio)

    def build_artifact(self, onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                       ort_platform: str = "arm") -> Artifact:
        return Artifact("onnx", onnx_path)  # the runtime loads the ONNX file itself
