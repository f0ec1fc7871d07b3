"""TensorRT's ``trtexec`` as text: its flags per TensorRT version, and its console log and ``--exportTimes``.

Pure functions (no device, no I/O); ``slimda.profilers.backends.trtexec`` runs them on a Jetson over ssh.
The flags differ per TensorRT version; what this module relies on:

- 8.2 (JetPack 4.6, Jetson Nano): ``--workspace=N`` (MiB), ``--fp16``, ``--buildOnly``,
  ``--percentile=P`` (one value), ``--warmUp=ms --duration=s --iterations=N --avgRuns=N``,
  ``--exportTimes=file``, ``--saveEngine=file``, ``--shapes=name:AxBxC``. The banner reads
  ``&&&& RUNNING TensorRT.trtexec [TensorRT v8201]`` (tests/data/trtexec/trt8.2.1_jetson_nano_tegra_x1.log).
- 8.4 added memory pools (``IBuilderConfig::setMemoryPoolLimit``, "API Changes For TensorRT 8.4.0 EA",
  docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-840-ea/api/index.html) and trtexec's
  ``--memPoolSize=workspace:N``; ``--workspace`` was deprecated then and removed in 10.x ("Migrating
  trtexec Usage from TensorRT 8.x to 10.x": "--workspace flag replaced with --memPoolSize=workspace:<size>").
  We switch at 8.5, where both flags are accepted.
- 8.5+ print ``percentile(90%)``, ``percentile(95%)``, ``percentile(99%)`` (``--percentile=90,95,99``);
  8.2 and 8.4 print ``percentile(99%)`` only (captured logs in tests/data/trtexec).
- 8.6+ skip timing with ``--skipInference`` (``--buildOnly`` is the 8.2 name).
- 10.x: ``--bf16`` exists; TF32 is on unless ``--noTF32`` (the 10.x log prints "TF32 is enabled by
  default. Add --noTF32 flag ..."), so fp32 measurements pass ``--noTF32``.
- int8 (explicit quantization: a QDQ model, as slimda.export.quantize writes): ``--int8`` enables INT8
  kernels where the Q/DQ nodes say so, plus ``--fp16`` so layers left unquantized run in fp16 rather than fp32
  (NVIDIA's "Explicit Quantization" guidance); the same two flags from 8.2 to 10.x. No ``--calib``: the
  scales are in the model.
- 11.x removes every precision flag (``--fp16``, ``--bf16``, ``--int8``, ``--fp8``, ``--int4``, ``--best``):
  networks are always strongly typed, and fp16 comes from converting the model offline with ModelOpt
  AutoCast ("Migrating trtexec Usage from TensorRT 10.x to 11.x", docs.nvidia.com/deeplearning/tensorrt/
  11.0.0/api/migration/tensorrt-10x-to-11x-trtexec.html). The same guide notes JetPack is not supported by
  TensorRT 11.3/11.4, so Jetsons stay on 10.x for now.

We never pass ``--noDataTransfers`` or ``--useCudaGraph`` (their meaning changed across versions, DESIGN
§2.4): the default metric, ``GPU Compute Time``, excludes host/device copies anyway; the ``latency`` metric
(``TensorRTOptions.metric``) reads ``Latency`` (H2D + compute + D2H) instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.devices import BF16, FP16, INT8
from slimda.profilers.onnxinfo import InputSpec, shape_text
from slimda.profilers.stats import LatencyStats

TrtVersion = tuple[int, int, int]

METRIC_LINES = {"gpu_compute": "GPU Compute Time", "latency": "Latency"}

# ---------------------------------------------------------------------------------------------- versions

_BANNER = re.compile(r"\[TensorRT v(\d{4,6})\]")
_VERSION_LINE = re.compile(r"TensorRT version:\s*(\d+(?:\.\d+){1,3})")


def parse_version(text: str) -> TrtVersion:
    """``"8.2"``, ``"8.2.1.8"``, ``"10.3.0"``, banner digits ``"8201"`` / ``"v101602"`` -> (major, minor, patch)."""
    s = str(text).strip().lstrip("vV")
    if re.fullmatch(r"\d{4}", s):  # 8201 -> 8.2.01
        return int(s[0]), int(s[1]), int(s[2:])
    if re.fullmatch(r"\d{6}", s):  # 101602 -> 10.16.02
        return int(s[:2]), int(s[2:4]), int(s[4:])
    m = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", s)
    if not m or int(m.group(1)) < 7:
        raise ConfigError(f"cannot read TensorRT version {text!r}: write it as 8.2, 8.6.1 or 10.3")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def version_text(version: TrtVersion) -> str:
    return ".".join(str(v) for v in version)


def version_from_output(text: str) -> TrtVersion | None:
    """The version trtexec announces: the ``[TensorRT v8201]`` banner, else ``TensorRT version: 8.2.1``."""
    m = _BANNER.search(text)
    if m:
        return parse_version(m.group(1))
    m = _VERSION_LINE.search(text)
    return parse_version(m.group(1)) if m else None


# ------------------------------------------------------------------------------------------ command lines


def trtexec_command(trtexec: str, version: TrtVersion, *, onnx: str | None = None, load_engine: str | None = None,
                    precision: str = FP16, workspace_mib: int = 1024, warmup_ms: int = 500, duration_s: int = 3,
                    iterations: int = 50, avg_runs: int = 10, export_times: str | None = None,
                    save_engine: str | None = None, shapes: str | None = None,
                    build_only: bool = False) -> list[str]:
    """The trtexec argument list for ``version`` (see the module docstring for the per-version rules)."""
    if (onnx is None) == (load_engine is None):
        raise ValueError("give exactly one of onnx / load_engine")
    major_minor = version[:2]
    argv = [trtexec, f"--onnx={onnx}" if onnx else f"--loadEngine={load_engine}"]
    if onnx:
        argv += precision_flags(version, precision)
        if major_minor < (8, 5):
            argv.append(f"--workspace={workspace_mib}")
        else:
            argv.append(f"--memPoolSize=workspace:{workspace_mib}")
    if shapes:
        argv.append(f"--shapes={shapes}")
    if save_engine:
        argv.append(f"--saveEngine={save_engine}")
    if build_only:
        argv.append("--buildOnly" if major_minor < (8, 6) else "--skipInference")
        return argv
    argv += [f"--warmUp={warmup_ms}", f"--duration={duration_s}", f"--iterations={iterations}",
             f"--avgRuns={avg_runs}", "--percentile=99" if major_minor < (8, 5) else "--percentile=90,95,99"]
    if export_times:
        argv.append(f"--exportTimes={export_times}")
    return argv


def precision_flags(version: TrtVersion, precision: str) -> list[str]:
    """Flags that allow ``precision`` kernels; none at all from TensorRT 11 (strongly typed networks)."""
    if version[0] >= 11:
        return []
    if precision == FP16:
        return ["--fp16"]
    if precision == INT8:
        return ["--int8", "--fp16"]
    if precision == BF16:
        if version[0] < 10:
            raise ConfigError(f"TensorRT {version_text(version)} has no bf16 in trtexec: use fp16 or fp32")
        return ["--bf16"]
    return ["--noTF32"]


def shapes_arg(specs: list[InputSpec]) -> str | None:
    """``--shapes`` value when the model has symbolic dimensions (trtexec needs concrete ones)."""
    if not any(s.dynamic for s in specs):
        return None
    return ",".join(f"{s.name}:{shape_text(s.shape)}" for s in specs)


# -------------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class SummaryLine:
    """One ``Name: min = .., max = .., mean = .., median = .., percentile(P%) = ..`` line, in ms."""

    min: float | None
    max: float | None
    mean: float | None
    median: float | None
    percentiles: dict[float, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrtexecSummary:
    """The parts of a trtexec log the profiler uses."""

    version: TrtVersion | None
    metrics: dict[str, SummaryLine]
    queries: int | None
    throughput_qps: float | None
    walltime_s: float | None
    passed: bool | None

    def runs(self) -> tuple[int, bool]:
        """(timed queries, whether that number is an estimate from throughput x walltime)."""
        if self.queries is not None:
            return self.queries, False
        if self.throughput_qps is not None and self.walltime_s is not None:
            return int(round(self.throughput_qps * self.walltime_s)), True
        return 0, True

    def to_stats(self, metric: str = "gpu_compute") -> LatencyStats:
        name = METRIC_LINES[metric]
        line = self.metrics.get(name)
        if line is None or line.median is None:
            raise SlimdaError(f"trtexec printed no '{name}' summary line (was inference skipped or did it fail?)")
        runs, _ = self.runs()
        return LatencyStats(p50=line.median, mean=line.mean if line.mean is not None else line.median, runs=runs,
                            p90=line.percentiles.get(90.0), p99=line.percentiles.get(99.0),
                            min=line.min, max=line.max)


_NAMES = "End-to-End Host Latency|GPU Compute Time|Enqueue Time|H2D Latency|D2H Latency|Latency"
_SUMMARY = re.compile(rf"(?:^|\]\s)({_NAMES}):\s*(min\b.*)$", re.MULTILINE)
_FIELD = re.compile(r"\b(min|max|mean|median)\s*=?\s*([0-9.eE+-]+)\s*ms")
_PCTL = re.compile(r"percentile\(([0-9.]+)%\)\s*=?\s*([0-9.eE+-]+)\s*ms")
_QUERIES = re.compile(r"Timing trace has (\d+) queries over ([0-9.eE+-]+) s")
_THROUGHPUT = re.compile(r"Throughput:\s*([0-9.eE+-]+)\s*qps")
_WALLTIME = re.compile(r"Total Host Walltime:\s*([0-9.eE+-]+)\s*s")
_RESULT = re.compile(r"&&&& (PASSED|FAILED) TensorRT\.trtexec")


def _parse_line(body: str) -> SummaryLine:
    fields = {k: float(v) for k, v in _FIELD.findall(body)}
    pct = {float(p): float(v) for p, v in _PCTL.findall(body)}
    return SummaryLine(fields.get("min"), fields.get("max"), fields.get("mean"), fields.get("median"), pct)


def parse_trtexec_output(text: str) -> TrtexecSummary:
    """Parse a trtexec console log (8.2, 8.4, 8.5+, 10.x formats)."""
    metrics = {m.group(1): _parse_line(m.group(2)) for m in _SUMMARY.finditer(text)}
    q = _QUERIES.search(text)
    t = _THROUGHPUT.search(text)
    w = _WALLTIME.search(text)
    results = _RESULT.findall(text)
    return TrtexecSummary(
        version=version_from_output(text), metrics=metrics, queries=int(q.group(1)) if q else None,
        throughput_qps=float(t.group(1)) if t else None,
        walltime_s=float(w.group(1)) if w else (float(q.group(2)) if q else None),
        passed=(results[-1] == "PASSED") if results else None,
    )


def parse_times_json(text: str, metric: str = "gpu_compute", expected: int | None = None) -> list[float]:
    """Per-query times (ms) from an ``--exportTimes`` file: ``computeMs`` or ``latencyMs`` of each entry.

    Key names from ``exportJSONTrace`` in TensorRT's samples/common/sampleReporting.cpp. Older versions
    also write the warm-up queries first; ``expected`` (the timed queries) keeps only the last ones.
    """
    key = "computeMs" if metric == "gpu_compute" else "latencyMs"
    values = [float(entry[key]) for entry in json.loads(text) if key in entry]
    if expected and len(values) > expected:
        values = values[-expected:]
    return values
