"""ONNX Runtime with the model in ORT format: a desktop proxy, or a real phone over adb.

Conversion follows ONNX Runtime's own tool (``onnxruntime.tools.convert_onnx_models_to_ort``) and must be
given the target platform: ``amd64`` keeps the x86 NCHWc layout optimisations (without it the model runs
about 2x slower on x86), ``arm`` is what a phone needs. Converted files are cached by content hash,
platform and ONNX Runtime version. The deployed artefact is ``model.ort`` for the chosen platform.

On a phone (``options.adb``), the ``.ort`` file is pushed to ``/data/local/tmp/slimda`` and timed with
``onnxruntime_perf_test``, which the user builds for Android and pushes once (path in the options). Its
printed summary is parsed: ``Min/Max/P50/P90/P95/P99/P999 Latency: <seconds> s`` and
``Total inference requests``/``Runs`` (format of ``PerformanceResult::DumpToFile`` in
onnxruntime/test/perftest/performance_runner.cc; samples in tests/data/onnxruntime_perf_test).
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.adb import AdbTarget
from slimda.profilers.backends.ort_cpu import open_session
from slimda.profilers.base import (
    Artifact,
    Backend,
    LocalBackend,
    LocalModel,
    Measurement,
    check_artifact_kind,
    join_notes,
    timed_fields,
)
from slimda.profilers.config import MeasureOptions
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.onnxinfo import check_int8_model, input_specs, specs_text
from slimda.profilers.stats import LatencyStats
from slimda.tables import atomic_output

RUNTIME = "onnxruntime-ort-format"
PHONE_DIR = "/data/local/tmp/slimda"


def host_platform() -> str:
    """``amd64`` on x86 hosts, ``arm`` otherwise (the values convert_onnx_models_to_ort accepts)."""
    machine = platform.machine().lower()
    return "amd64" if machine in ("x86_64", "amd64", "i386", "i686", "x86") else "arm"


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "slimda-ort-cache"


def convert_to_ort(onnx_path: str | Path, target_platform: str, cache_dir: str | Path | None = None) -> Path:
    """The ORT-format file for ``onnx_path`` optimised for ``target_platform`` (``amd64`` or ``arm``), cached.

    Does what ``python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed
    --target_platform P`` does (``_convert`` in onnxruntime/tools/convert_onnx_models_to_ort.py): an
    ``InferenceSession`` with all graph optimisations that saves the optimised model in ORT format,
    ``session.qdqisint8allowed`` = 1 on arm, and the x86-only ``NchwcTransformer`` disabled unless the
    target is amd64. It is not called in-process because importing ``onnxruntime.tools`` imports torch
    whenever torch is installed (its ``__init__`` loads ``pytorch_export_helpers``), and the profilers must
    not; a subprocess would pay that import on every conversion. A test checks the result against the tool.
    """
    import onnxruntime as ort

    if target_platform not in ("amd64", "arm"):
        raise ConfigError(f"target platform must be 'amd64' or 'arm'; got {target_platform!r}")
    src = Path(onnx_path)
    if not src.is_file():
        raise SlimdaError(f"ONNX file not found: {src}")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache / f"{src.stem}-{digest}-{target_platform}-ort{ort.__version__}" / f"{src.stem}.ort"
    if final.is_file():
        return final
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.qdqisint8allowed", "1" if target_platform == "arm" else "0")
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.log_severity_level = 3
    disabled = None if target_platform == "amd64" else ["NchwcTransformer"]
    with atomic_output(final) as partial:  # a concurrent reader never sees half a file
        so.optimized_model_filepath = str(partial)
        ort.InferenceSession(str(src), sess_options=so, providers=["CPUExecutionProvider"],
                             disabled_optimizers=disabled)
        if not partial.is_file():
            raise SlimdaError(f"ORT-format conversion of {src} produced no file")
    return final


def shipped_or_converted(path: Path, artifact: Artifact | None, platform_needed: str,
                         cache_dir: str | Path | None) -> tuple[Path, str]:
    """The ORT-format file to time for ``platform_needed``: the shipped ``artifact`` when it was converted for
    that platform, else ``path`` converted for it (cached); and a note saying which."""
    check_artifact_kind(artifact, ("ort",), "ORT format")
    if artifact is not None:
        shipped = artifact.notes.get("ort_target_platform")
        if shipped == platform_needed:
            return artifact.path, f"timed the shipped {artifact.path.name} (converted for {shipped})"
        converted = convert_to_ort(path, platform_needed, cache_dir)
        return converted, (f"the shipped {artifact.path.name} is converted for {shipped}, which this target does "
                           f"not run at speed: timed the same ONNX converted for {platform_needed} instead")
    return convert_to_ort(path, platform_needed, cache_dir), f"ORT format converted with --target_platform " \
                                                              f"{platform_needed}"


def ort_artifact(onnx_path: Path, out_dir: Path, target_platform: str) -> Artifact:
    """``out_dir/model.ort``: ``onnx_path`` converted to ORT format for ``target_platform``."""
    with tempfile.TemporaryDirectory(prefix="slimda-ort-") as cache:
        converted = convert_to_ort(onnx_path, target_platform, cache_dir=cache)
        final = out_dir / "model.ort"
        with atomic_output(final) as partial:
            shutil.copyfile(converted, partial)
    return Artifact("ort", final, notes={"ort_target_platform": target_platform})


class OrtFormatBackend(LocalBackend):
    """``ort-mobile`` as a desktop proxy: converted for this host's platform, one thread by default."""

    name = "ort-format-proxy"
    runtime = RUNTIME

    def open_local(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                   artifact: Artifact | None = None) -> LocalModel:
        import onnxruntime as ort

        model_precision = check_int8_model(path, options.precision_for(device), device.name)
        threads = options.threads_for(device) or 1
        specs = input_specs(path, options.batch, options.resolution)
        ort_file, how = shipped_or_converted(path, artifact, host_platform(), options.cache_dir)
        run = open_session(ort_file, specs, threads, options)
        return LocalModel(run, dict(device=device.name, runtime=RUNTIME, runtime_version=ort.__version__,
                                    precision=model_precision, threads=threads, batch=options.batch,
                                    input_shape=specs_text(specs), **timed_fields(artifact and ort_file)),
                          (f"desktop proxy: {how}", f"ort_file={ort_file.name}"))

    def build_artifact(self, onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                       ort_platform: str = "arm") -> Artifact:
        return ort_artifact(onnx_path, out_dir, ort_platform)


@dataclass(frozen=True)
class PerfTestSummary:
    """What ``onnxruntime_perf_test`` printed, in milliseconds."""

    runs: int | None
    mean_ms: float | None
    percentiles_ms: dict[str, float]  # keys: min, max, p50, p90, p95, p99, p999

    def to_stats(self) -> LatencyStats:
        p = self.percentiles_ms
        if "p50" not in p:
            raise SlimdaError("onnxruntime_perf_test printed no latency percentiles: use a build that prints "
                              "'P50 Latency: ... s' (pass -s; ONNX Runtime 1.1x or later)")
        return LatencyStats(p50=p["p50"], p90=p.get("p90"), p99=p.get("p99"), min=p.get("min"),
                            max=p.get("max"), mean=self.mean_ms if self.mean_ms is not None else p["p50"],
                            runs=self.runs or 0)


_PCT = re.compile(r"^(Min|Max|P50|P90|P95|P99|P999) Latency:\s*([0-9.eE+-]+)\s*s\s*$", re.MULTILINE)
_RUNS = re.compile(r"^(?:Total inference requests:\s*|Runs:)(\d+)\s*$", re.MULTILINE)
_MEAN = re.compile(r"^Average inference time cost(?: total)?:\s*([0-9.eE+-]+)\s*ms\s*$", re.MULTILINE)


def parse_perf_test_output(text: str) -> PerfTestSummary:
    """Parse onnxruntime_perf_test's console summary (latencies converted from seconds to ms)."""
    percentiles = {m.group(1).lower(): float(m.group(2)) * 1000.0 for m in _PCT.finditer(text)}
    runs = [int(m.group(1)) for m in _RUNS.finditer(text)]
    mean = _MEAN.search(text)
    if not runs and mean is None and not percentiles:
        raise SlimdaError("no onnxruntime_perf_test summary found in its output:\n"
                          + "\n".join(text.strip().splitlines()[-10:]))
    return PerfTestSummary(runs[-1] if runs else None, float(mean.group(1)) if mean else None, percentiles)


def perf_test_command(binary: str, model: str, runs: int, threads: int) -> list[str]:
    """``onnxruntime_perf_test`` on the CPU EP, fixed repetitions, generated random inputs, statistics."""
    return [binary, "-e", "cpu", "-m", "times", "-r", str(runs), "-x", str(threads), "-y", "1", "-I", "-s", model]


class AdbBackend(Backend):
    """``ort-mobile`` on a phone over adb: the arm ORT-format model timed there by onnxruntime_perf_test."""

    name = "ort-format-adb"

    def handles(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        return device.runtime == RUNTIME and options.adb is not None

    def measure(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                artifact: Artifact | None = None) -> Measurement:
        import onnxruntime as ort

        adb = options.adb
        assert adb is not None  # handles() saw to it
        model_precision = check_int8_model(path, options.precision_for(device), device.name)
        specs = input_specs(path, options.batch, options.resolution)
        if any(s.dynamic for s in specs) and (options.batch != 1 or options.resolution is not None):
            raise ConfigError("onnxruntime_perf_test -I sets every free dimension to 1: export the model with "
                              "fixed input shapes to profile another batch or resolution on a phone")
        threads = options.threads_for(device) or 1
        phone = AdbTarget(adb.serial, adb.adb_path)
        binary = adb.perf_test_path
        if phone.run(["test", "-x", binary]).returncode != 0:
            raise ConfigError(
                f"onnxruntime_perf_test not found (or not executable) at {binary} on adb device {adb.serial}. "
                "Build it for Android (ONNX Runtime ./build.sh --android --android_abi arm64-v8a ... "
                "--build_shared_lib), then `adb push` onnxruntime_perf_test and libonnxruntime.so to "
                f"{str(Path(binary).parent)} and `adb shell chmod +x {binary}`, or pass its path.")
        ort_file, how = shipped_or_converted(path, artifact, "arm", options.cache_dir)
        remote = f"{PHONE_DIR}/{ort_file.name}"
        phone.run(["mkdir", "-p", PHONE_DIR], check=True)
        phone.push(ort_file, remote)
        command = perf_test_command(binary, remote, max(options.min_runs, 1), threads)
        result = phone.run(command, timeout=adb.timeout_s, env={"LD_LIBRARY_PATH": str(Path(binary).parent)})
        if result.returncode != 0:
            raise SlimdaError(f"onnxruntime_perf_test failed on {adb.serial} (exit {result.returncode}): "
                              f"{result.command}\n{result.tail()}")
        stats = parse_perf_test_output(result.output).to_stats()
        return Measurement(
            device=device.name, runtime=RUNTIME, runtime_version="onnxruntime_perf_test (device)",
            precision=model_precision, threads=threads, batch=options.batch, input_shape=specs_text(specs),
            host=f"adb:{adb.serial}", stats=stats, **timed_fields(artifact and ort_file),
            notes=join_notes(f"{how} (onnxruntime {ort.__version__})",
                             "perf_test: 1 built-in warm-up run, -m times -r "
                             f"{max(options.min_runs, 1)}; std/cv not reported", f"command={result.command}"),
        )

    def build_artifact(self, onnx_path: Path, device: DeviceProfile, out_dir: Path, options: MeasureOptions,
                       ort_platform: str = "arm") -> Artifact:
        return ort_artifact(onnx_path, out_dir, ort_platform)
