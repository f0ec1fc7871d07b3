"""The typed options and result of one measurement, the CSV row, and the entry points.

``measure(onnx, device, options) -> Measurement`` times one ONNX model on one device and raises on failure;
``measure_paired(onnx, reference, ...)`` times it in alternating chunks with a reference model (runtimes
slimda drives, here or over ssh) and also returns their ratio, which a wandering machine speed cancels out of;
``measure_row(...)`` is the form a LUT build uses: it always returns a flat row, a failure row
(``status=failed``, the error text, empty numbers) when the entry itself fails. Configuration mistakes and
unreachable targets (``ConfigError``, ``TransportError``) still raise there: they would fail every entry.
Runtimes are imported only when used, so this module loads without onnxruntime, openvino or tensorrt.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.devices import JETPACK_TRTEXEC, DeviceProfile, get_device
from slimda.profilers.stats import LatencyStats, LoopLimits, compute_stats, paired_runs, timed_runs
from slimda.profilers.transport import TransportError

PRECISIONS = ("fp32", "fp16", "bf16")

ROW_COLUMNS: tuple[str, ...] = (
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "latency_ms_std", "cv", "runs",
    "device", "runtime", "runtime_version", "precision", "threads", "batch", "input_shape", "host",
    "measured_at", "status", "error", "notes",
)
PAIRED_COLUMNS = ("reference_ms", "vs_reference")  # what ``measure_row(..., reference=...)`` adds


class MeasurementError(SlimdaError):
    """A model could not be measured on the device (the runtime rejected or crashed on it)."""


@dataclass(frozen=True)
class MeasureOptions:
    """How to measure. ``None`` for threads/precision means the device profile's default.

    Loop: ``warmup`` untimed runs, then timed runs until ``min_runs`` and ``min_time_s`` are both met,
    stopping anyway at ``max_runs`` / ``max_time_s``. Remote targets: ``host`` (ssh), ``adb_serial`` (phone).
    """

    threads: int | None = None
    precision: str | None = None
    batch: int = 1
    resolution: tuple[int, int] | None = None
    warmup: int = 10
    min_runs: int = 50
    min_time_s: float = 1.0
    max_runs: int = 1_000_000
    max_time_s: float = 60.0
    seed: int = 0
    # ssh (Jetson trtexec, or a CPU box running the slimda worker)
    host: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    connect_timeout_s: int = 10
    remote_python: str = "python3"
    remote_dir: str = "/tmp/slimda-profile"
    timeout_s: float = 1800.0
    # adb (ort-mobile on a phone)
    adb_serial: str | None = None
    adb_path: str = "adb"
    perf_test_path: str = "/data/local/tmp/onnxruntime_perf_test"
    # TensorRT
    trt_version: str | None = None
    trtexec_path: str = JETPACK_TRTEXEC
    workspace_mib: int = 1024
    trt_warmup_ms: int = 500
    trt_metric: str = "gpu_compute"  # "gpu_compute" (GPU Compute Time) or "latency" (H2D + compute + D2H)
    # ort-mobile conversion cache (default: <tmp>/slimda-ort-cache)
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1; got {self.batch}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1; got {self.threads}")
        if self.trt_metric not in ("gpu_compute", "latency"):
            raise ConfigError(f"trt_metric must be 'gpu_compute' or 'latency'; got {self.trt_metric!r}")
        self.limits()  # validates the loop bounds

    def limits(self) -> LoopLimits:
        return LoopLimits(self.warmup, self.min_runs, self.min_time_s, self.max_runs, self.max_time_s)

    def threads_for(self, device: DeviceProfile) -> int | None:
        return self.threads if self.threads is not None else device.threads

    def precision_for(self, device: DeviceProfile) -> str:
        return self.precision or device.precision

    def ssh_target(self):
        from slimda.profilers.ssh import SSHTarget

        if not self.host:
            raise ConfigError("no --host given for an ssh target")
        return SSHTarget(self.host, self.port, self.identity_file, tuple(self.ssh_options), self.connect_timeout_s)

    def to_dict(self) -> dict:
        return asdict(self)


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


def measure(onnx_path: str | Path, device: str | DeviceProfile,
            options: MeasureOptions | None = None) -> Measurement:
    """Time ``onnx_path`` on ``device``. Raises ``SlimdaError`` subclasses on any failure."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    with _runtime_errors(f"{dev.name}: measuring {onnx_path}"):
        return _dispatch(Path(onnx_path), dev, opts)


@contextlib.contextmanager
def _runtime_errors(what: str) -> Iterator[None]:
    """Turn a runtime's own exception (their types differ per runtime) into a ``MeasurementError``."""
    try:
        yield
    except SlimdaError:
        raise
    except Exception as err:
        raise MeasurementError(f"{what} failed: {type(err).__name__}: {err}") from err


def _dispatch(path: Path, dev: DeviceProfile, opts: MeasureOptions) -> Measurement:
    if dev.is_jetson or (dev.name == "tensorrt" and opts.host):
        from slimda.profilers import trtexec

        return trtexec.measure_trtexec(path, dev, opts)
    if dev.name == "tensorrt":
        from slimda.profilers import tensorrt_local

        return tensorrt_local.measure_tensorrt(path, dev, opts)
    if dev.name == "ort-mobile" and opts.adb_serial:
        from slimda.profilers import ort_mobile

        return ort_mobile.measure_adb(path, dev, opts)
    if opts.host:
        from slimda.profilers import remote

        return remote.measure_over_ssh(path, dev, opts)
    if opts.adb_serial:
        raise ConfigError(f"--adb is for the ort-mobile device, not {dev.name}")
    return measure_local(path, dev, opts)


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


def loop_note(complete: bool, opts: MeasureOptions) -> str:
    if complete:
        return f"loop=warmup {opts.warmup}, >= {opts.min_runs} runs and >= {opts.min_time_s:g} s"
    return (f"loop stopped by max_runs={opts.max_runs}/max_time_s={opts.max_time_s:g} before reaching "
            f"min_runs={opts.min_runs} and min_time_s={opts.min_time_s:g}")


def open_local(path: Path, dev: DeviceProfile, opts: MeasureOptions) -> LocalModel:
    """Load ``path`` in the device's Python runtime on this host (what the ssh worker does remotely)."""
    if dev.name == "cpu-onnxruntime":
        from slimda.profilers import ort_cpu

        return ort_cpu.open_onnxruntime(path, dev, opts)
    if dev.name == "cpu-openvino":
        from slimda.profilers import openvino_cpu

        return openvino_cpu.open_openvino(path, dev, opts)
    if dev.name == "ort-mobile":
        from slimda.profilers import ort_mobile

        return ort_mobile.open_local(path, dev, opts)
    raise ConfigError(f"{dev.name} cannot be measured on this host by a Python runtime "
                      f"({dev.runtime}, reached via {dev.where}: {dev.reach})")


def measure_local(path: Path, dev: DeviceProfile, opts: MeasureOptions) -> Measurement:
    """Measure on this host with the device's Python runtime."""
    model = open_local(path, dev, opts)
    latencies, complete = timed_runs(model.run, opts.limits())
    return model.measurement(compute_stats(latencies), loop_note(complete, opts))


def can_pair(device: str | DeviceProfile, options: MeasureOptions | None = None) -> bool:
    """Whether ``measure_paired`` works for the device: its runtime is a Python runtime that slimda drives,
    here or on an ssh host through the worker, so two models can be alternated run by run (not on a phone
    through adb, not with trtexec)."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    return dev.name in ("cpu-onnxruntime", "cpu-openvino", "ort-mobile") and not opts.adb_serial


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


def measure_paired(onnx_path: str | Path, reference_path: str | Path, device: str | DeviceProfile,
                   options: MeasureOptions | None = None) -> PairedMeasurement:
    """Time ``onnx_path`` against ``reference_path`` (chunks of ~20 ms each in turn) on a device slimda
    drives (here, or on ``options.host`` through the ssh worker).

    A shared host or a CPU with unlocked clocks changes speed by tens of percent within seconds; both models
    feel it alike, so their ratio repeats far better than either latency (benchmarks/latency_noise.py)."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    if not can_pair(dev, opts):
        raise ConfigError(f"{dev.name} cannot time two models in turn (only the Python runtimes slimda drives, "
                          "here or over ssh, can: cpu-onnxruntime, cpu-openvino, ort-mobile without --adb)")
    if opts.host:
        from slimda.profilers import remote

        return remote.measure_paired_over_ssh(Path(onnx_path), Path(reference_path), dev, opts)
    with _runtime_errors(f"{dev.name}: measuring {onnx_path} against {reference_path}"):
        model = open_local(Path(onnx_path), dev, opts)
        reference = open_local(Path(reference_path), dev, opts)
        runs = paired_runs(model.run, reference.run, opts.limits())
    reference_stats = compute_stats(runs.reference)
    measured = model.measurement(
        compute_stats(runs.latencies), loop_note(runs.complete, opts),
        f"paired with {Path(reference_path).name} in {len(runs.ratios)} alternating chunk pairs "
        f"(reference median {reference_stats.p50:.4f} ms)")
    return PairedMeasurement(measured, reference_stats.p50, runs.ratio)


FATAL_ERRORS: tuple[type[BaseException], ...] = (ConfigError, TransportError)


def measure_row(onnx_path: str | Path, device: str | DeviceProfile, options: MeasureOptions | None = None,
                reference: str | Path | None = None, **extra: object) -> dict[str, object]:
    """``measure(...).to_row()`` plus ``extra`` columns; a failing entry becomes a failure row. With a
    ``reference`` model, ``measure_paired(...).to_row()`` (the ``PAIRED_COLUMNS`` too).

    ``ConfigError`` and ``TransportError`` are re-raised: a bad option or an unreachable target would
    fail every entry of a table, so the caller should stop and report it once.
    """
    dev = get_device(device)
    opts = options or MeasureOptions()
    try:
        if reference is None:
            row = measure(onnx_path, dev, opts).to_row()
        else:
            row = measure_paired(onnx_path, reference, dev, opts).to_row()
    except FATAL_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of this entry becomes its row
        row = failure_row(dev, err, runtime=dev.runtime, host=opts.host or opts.adb_serial or "", options=opts)
    row.update(extra)
    return row
