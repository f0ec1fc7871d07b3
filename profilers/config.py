"""How to measure: ``MeasureOptions`` and the typed records of each transport and runtime it may carry.

The common fields (threads, precision, batch, resolution, loop bounds, seed, cache) apply everywhere; ``ssh``
(a host: a Jetson, or a CPU box running slimda's worker), ``adb`` (a phone) and ``tensorrt`` (trtexec and the
TensorRT builder) only where they are used. ``to_dict`` / ``from_dict`` round-trip them; ``from_dict`` also
reads the flat keys an older slimda wrote (``host``, ``adb_serial``, ``trt_metric``...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from slimda.errors import ConfigError
from slimda.profilers.devices import JETPACK_TRTEXEC, PRECISIONS, DeviceProfile
from slimda.profilers.ssh import SSHTarget
from slimda.profilers.stats import LoopLimits

# The fields every runtime uses: what the ssh worker receives (transport fields stay on the calling side).
COMMON_FIELDS = ("threads", "precision", "batch", "resolution", "warmup", "min_runs", "min_time_s",
                 "max_runs", "max_time_s", "seed", "cache_dir")
PERF_TEST_PATH = "/data/local/tmp/onnxruntime_perf_test"  # where the phone's onnxruntime_perf_test is pushed
# the version of slimda.profilers.worker's --serve protocol the calling side expects (2: a request may name
# the artefact to time)
PROTOCOL = 2


@dataclass(frozen=True)
class SSHOptions:
    """An ssh target (``host`` is ``user@addr`` or an ~/.ssh/config alias) and where slimda works there."""

    host: str
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    connect_timeout_s: int = 10
    remote_python: str = "python3"  # the interpreter with slimda installed (CPU devices over ssh)
    remote_dir: str = "/tmp/slimda-profile"
    timeout_s: float = 1800.0  # one remote measurement or engine build

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("no --host given for an ssh target")
        object.__setattr__(self, "ssh_options", tuple(self.ssh_options))

    def target(self) -> SSHTarget:
        return SSHTarget(self.host, self.port, self.identity_file, self.ssh_options, self.connect_timeout_s)


@dataclass(frozen=True)
class AdbOptions:
    """A phone as ``adb devices`` lists it (ort-mobile), and the ``onnxruntime_perf_test`` pushed to it."""

    serial: str
    adb_path: str = "adb"
    perf_test_path: str = PERF_TEST_PATH
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if not self.serial:
            raise ConfigError("no --adb serial given for a phone")


@dataclass(frozen=True)
class TensorRTOptions:
    """trtexec (on a Jetson over ssh) and the TensorRT builder. ``trt_version`` None: detect it on the device;
    ``metric``: ``gpu_compute`` (GPU Compute Time) or ``latency`` (H2D + compute + D2H)."""

    trt_version: str | None = None
    trtexec_path: str = JETPACK_TRTEXEC
    workspace_mib: int = 1024
    warmup_ms: int = 500
    metric: str = "gpu_compute"

    def __post_init__(self) -> None:
        if self.metric not in ("gpu_compute", "latency"):
            raise ConfigError(f"trt_metric must be 'gpu_compute' or 'latency'; got {self.metric!r}")


# flat keys of the single dataclass these records replaced -> (record, field)
_FLAT_KEYS = {
    "host": ("ssh", "host"), "port": ("ssh", "port"), "identity_file": ("ssh", "identity_file"),
    "ssh_options": ("ssh", "ssh_options"), "connect_timeout_s": ("ssh", "connect_timeout_s"),
    "remote_python": ("ssh", "remote_python"), "remote_dir": ("ssh", "remote_dir"),
    "adb_serial": ("adb", "serial"), "adb_path": ("adb", "adb_path"), "perf_test_path": ("adb", "perf_test_path"),
    "trt_version": ("tensorrt", "trt_version"), "trtexec_path": ("tensorrt", "trtexec_path"),
    "workspace_mib": ("tensorrt", "workspace_mib"), "trt_warmup_ms": ("tensorrt", "warmup_ms"),
    "trt_metric": ("tensorrt", "metric"),
}
_RECORDS = {"ssh": (SSHOptions, "host"), "adb": (AdbOptions, "serial"), "tensorrt": (TensorRTOptions, None)}


@dataclass(frozen=True)
class MeasureOptions:
    """How to measure. ``None`` for threads/precision means the device profile's default.

    Loop: ``warmup`` untimed runs, then timed runs until ``min_runs`` and ``min_time_s`` are both met,
    stopping anyway at ``max_runs`` / ``max_time_s``. ``cache_dir``: ORT-format conversions (default:
    <tmp>/slimda-ort-cache). Remote targets: ``ssh`` (a host), ``adb`` (a phone).
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
    cache_dir: str | None = None
    ssh: SSHOptions | None = None
    adb: AdbOptions | None = None
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1; got {self.batch}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1; got {self.threads}")
        self.limits()  # validates the loop bounds

    @property
    def host(self) -> str | None:
        """The ssh host, or None when nothing is measured over ssh."""
        return self.ssh.host if self.ssh else None

    def limits(self) -> LoopLimits:
        return LoopLimits(self.warmup, self.min_runs, self.min_time_s, self.max_runs, self.max_time_s)

    def threads_for(self, device: DeviceProfile) -> int | None:
        return self.threads if self.threads is not None else device.threads

    def precision_for(self, device: DeviceProfile) -> str:
        """The precision asked for (else the device's default); one the device lacks is a ``ConfigError``."""
        return device.check_precision(self.precision or device.precision)

    def common_dict(self) -> dict:
        """The fields every runtime uses (what the ssh worker measures with)."""
        return {k: getattr(self, k) for k in COMMON_FIELDS}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MeasureOptions:
        """Options from ``to_dict()`` output, or from the flat keys of an older slimda; unknown keys are ignored."""
        common = {k: data[k] for k in COMMON_FIELDS if k in data}
        if common.get("resolution") is not None:
            common["resolution"] = tuple(common["resolution"])
        parts: dict[str, dict] = {name: dict(data.get(name) or {}) for name in _RECORDS}
        for key, (record, name) in _FLAT_KEYS.items():
            if data.get(key) is not None:
                parts[record].setdefault(name, data[key])
        if data.get("timeout_s") is not None:  # one flat timeout served ssh and adb
            for record in ("ssh", "adb"):
                parts[record].setdefault("timeout_s", data["timeout_s"])
        records = {}
        for name, (record, required) in _RECORDS.items():
            known = {f.name for f in fields(record)}
            values = {k: v for k, v in parts[name].items() if k in known}
            if required is None or values.get(required):  # no host: not over ssh; no serial: no phone
                records[name] = record(**values)
        return cls(**common, **records)
