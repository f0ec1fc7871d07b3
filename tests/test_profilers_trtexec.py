"""trtexec and onnxruntime_perf_test: parsers on real captured output, command lines per version.

The captured files and where each comes from: tests/data/trtexec/PROVENANCE.md and
tests/data/onnxruntime_perf_test/PROVENANCE.md. Every asserted number is copied from those files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.backends.ort_mobile import parse_perf_test_output, perf_test_command
from slimda.profilers.backends.trtexec_cli import (
    parse_times_json,
    parse_trtexec_output,
    parse_version,
    trtexec_command,
    version_from_output,
)

DATA = Path(__file__).parent / "data"
TRT = DATA / "trtexec"
PERF = DATA / "onnxruntime_perf_test"


def log(name: str) -> str:
    return (TRT / name).read_text(encoding="utf-8")


# -------------------------------------------------------------------------------------------------- versions

@pytest.mark.parametrize("name, version", [
    ("trt8.2.1_jetson_nano_tegra_x1.log", (8, 2, 1)),
    ("trt8.4_xavier_agx_meta_tegra_pr952_excerpt.log", (8, 4, 0)),
    ("trt10.13_qwen_image_excerpt.log", (10, 13, 0)),
    ("trt10.16.2_orin_nx_meta_tegra_pr2243_excerpt.log", (10, 16, 2)),
])
def test_version_from_banner(name, version):
    assert version_from_output(log(name)) == version


def test_version_text_forms():
    assert parse_version("8.2") == (8, 2, 0)
    assert parse_version("8.2.1.8-1+cuda10.2") == (8, 2, 1)
    assert parse_version("v8201") == (8, 2, 1)
    assert parse_version("101602") == (10, 16, 2)
    assert version_from_output("[I] TensorRT version: 8.2.1\n") == (8, 2, 1)
    assert version_from_output("no version here") is None
    with pytest.raises(ConfigError):
        parse_version("latest")


# -------------------------------------------------------------------------------------------------- parsing

def test_parse_trt82_jetson_nano_log():
    summary = parse_trtexec_output(log("trt8.2.1_jetson_nano_tegra_x1.log"))
    gpu = summary.metrics["GPU Compute Time"]
    assert (gpu.min, gpu.max, gpu.mean, gpu.median) == (89.0273, 91.2045, 90.1061, 90.0183)
    assert gpu.percentiles == {99.0: 91.2045}
    lat = summary.metrics["Latency"]
    assert (lat.min, lat.max, lat.mean, lat.median, lat.percentiles[99.0]) == (89.312, 91.492, 90.3919, 90.3035,
                                                                               91.492)
    assert summary.metrics["End-to-End Host Latency"].median == 90.3167
    assert summary.metrics["H2D Latency"].mean == 0.277587
    assert summary.queries == 35 and summary.walltime_s == 3.16419 and summary.throughput_qps == 11.0613
    assert summary.passed is True and summary.version == (8, 2, 1)
    stats = summary.to_stats("gpu_compute")
    assert (stats.p50, stats.p99, stats.mean, stats.runs, stats.min, stats.max) == (
        90.0183, 91.2045, 90.1061, 35, 89.0273, 91.2045)
    assert stats.p90 is None and stats.std is None  # 8.2 prints percentile(99%) only
    assert summary.to_stats("latency").p50 == 90.3035


def test_parse_trt84_excerpt():
    summary = parse_trtexec_output(log("trt8.4_xavier_agx_meta_tegra_pr952_excerpt.log"))
    gpu = summary.metrics["GPU Compute Time"]
    assert (gpu.min, gpu.max, gpu.mean, gpu.median, gpu.percentiles) == (
        0.375977, 0.403564, 0.388221, 0.388443, {99.0: 0.393188})
    assert "End-to-End Host Latency" not in summary.metrics
    assert summary.metrics["Enqueue Time"].median == 0.0871582
    assert summary.queries is None and summary.throughput_qps == 41087.7 and summary.walltime_s == 3.00119


def test_parse_trt10_excerpt_with_three_percentiles():
    summary = parse_trtexec_output(log("trt10.13_qwen_image_excerpt.log"))
    gpu = summary.metrics["GPU Compute Time"]
    assert (gpu.min, gpu.max, gpu.mean, gpu.median) == (1655.52, 1673.94, 1666.2, 1667.19)
    assert gpu.percentiles == {90.0: 1672.56, 95.0: 1673.94, 99.0: 1673.94}
    lat = summary.metrics["Latency"]
    assert (lat.median, lat.percentiles[90.0]) == (1667.89, 1673.26)
    assert summary.metrics["D2H Latency"].percentiles[95.0] == 0.0664062
    assert summary.queries is None
    assert summary.runs() == (10, True)  # 0.562059 qps x 17.7917 s; the excerpt's trace says "10 runs"
    stats = summary.to_stats()
    assert (stats.p50, stats.p90, stats.p99, stats.runs) == (1667.19, 1672.56, 1673.94, 10)


def test_build_only_log_has_no_timings():
    summary = parse_trtexec_output(log("trt10.16.2_orin_nx_meta_tegra_pr2243_excerpt.log"))
    assert summary.metrics == {} and summary.passed is None
    with pytest.raises(SlimdaError, match="GPU Compute Time"):
        summary.to_stats()


def test_times_json_parser_uses_documented_keys():
    """Keys as written by exportJSONTrace (TensorRT samples/common/sampleReporting.cpp); values made up."""
    entries = [{"startComputeMs": i, "endComputeMs": i + 1, "computeMs": 1.0 + i, "latencyMs": 1.5 + i}
               for i in range(5)]
    text = json.dumps(entries)
    assert parse_times_json(text, "gpu_compute") == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert parse_times_json(text, "latency", expected=3) == [3.5, 4.5, 5.5]  # older files start with warm-ups


# ------------------------------------------------------------------------------------------- command lines

def flags(argv: list[str]) -> dict[str, str | None]:
    out = {}
    for a in argv[1:]:
        key, _, value = a.partition("=")
        out[key] = value or None
    return out


def test_command_trt82_jetson_nano():
    argv = trtexec_command("/usr/src/tensorrt/bin/trtexec", (8, 2, 1), onnx="/tmp/m.onnx", precision="fp16",
                           workspace_mib=512, warmup_ms=300, duration_s=2, iterations=40, export_times="/tmp/t.json")
    assert argv[0] == "/usr/src/tensorrt/bin/trtexec"
    f = flags(argv)
    assert f["--onnx"] == "/tmp/m.onnx" and "--fp16" in f and f["--workspace"] == "512"
    assert (f["--warmUp"], f["--duration"], f["--iterations"], f["--avgRuns"]) == ("300", "2", "40", "10")
    assert f["--percentile"] == "99" and f["--exportTimes"] == "/tmp/t.json"
    assert "--memPoolSize" not in f and "--noDataTransfers" not in f and "--useCudaGraph" not in f
    build = flags(trtexec_command("trtexec", (8, 2, 1), onnx="m.onnx", save_engine="m.engine", build_only=True))
    assert "--buildOnly" in build and build["--saveEngine"] == "m.engine" and "--iterations" not in build


@pytest.mark.parametrize("version", [(8, 5, 2), (8, 6, 1), (10, 3, 0)])
def test_command_85_and_later(version):
    f = flags(trtexec_command("trtexec", version, onnx="m.onnx", precision="fp16", workspace_mib=1024))
    assert f["--memPoolSize"] == "workspace:1024" and "--workspace" not in f
    assert f["--percentile"] == "90,95,99" and "--fp16" in f
    build = flags(trtexec_command("trtexec", version, onnx="m.onnx", save_engine="e", build_only=True))
    assert ("--skipInference" in build) == (version >= (8, 6, 0))
    assert ("--buildOnly" in build) == (version < (8, 6, 0))


def test_command_precision_rules():
    assert "--noTF32" in trtexec_command("trtexec", (10, 3, 0), onnx="m", precision="fp32")
    assert "--bf16" in trtexec_command("trtexec", (10, 3, 0), onnx="m", precision="bf16")
    with pytest.raises(ConfigError, match="bf16"):
        trtexec_command("trtexec", (8, 2, 1), onnx="m", precision="bf16")
    trt11 = trtexec_command("trtexec", (11, 0, 0), onnx="m", precision="fp16")
    assert not {"--fp16", "--bf16", "--noTF32", "--best", "--int8"} & set(trt11)
    assert "--memPoolSize=workspace:1024" in trt11
    shaped = trtexec_command("trtexec", (10, 3, 0), onnx="m", shapes="x:4x3x64x64")
    assert "--shapes=x:4x3x64x64" in shaped
    engine = trtexec_command("trtexec", (10, 3, 0), load_engine="m.engine")
    assert "--loadEngine=m.engine" in engine and "--fp16" not in engine


# ------------------------------------------------------------------------------------ onnxruntime_perf_test

def test_parse_perf_test_current_format():
    summary = parse_perf_test_output((PERF / "arm_learning_paths_sme2_android_1thread.txt").read_text())
    assert summary.runs == 5 and summary.mean_ms == pytest.approx(98.961997)
    p = summary.percentiles_ms
    assert p["min"] == pytest.approx(95.8204) and p["max"] == pytest.approx(101.519)
    assert p["p50"] == pytest.approx(99.5086) and p["p90"] == pytest.approx(101.519)
    assert p["p99"] == pytest.approx(101.519) and p["p999"] == pytest.approx(101.519)
    stats = summary.to_stats()
    assert stats.p50 <= stats.p90 <= stats.p99 and stats.runs == 5 and stats.std is None


def test_parse_perf_test_old_format_without_percentiles():
    summary = parse_perf_test_output((PERF / "onnxruntime_issue4647_android_acl.txt").read_text())
    assert summary.runs == 10 and summary.mean_ms == pytest.approx(144.871) and summary.percentiles_ms == {}
    with pytest.raises(SlimdaError, match="P50 Latency"):
        summary.to_stats()
    with pytest.raises(SlimdaError, match="no onnxruntime_perf_test summary"):
        parse_perf_test_output("Segmentation fault\n")


def test_perf_test_command():
    argv = perf_test_command("/data/local/tmp/onnxruntime_perf_test", "/data/local/tmp/slimda/m.ort", 50, 1)
    assert argv[0] == "/data/local/tmp/onnxruntime_perf_test" and argv[-1] == "/data/local/tmp/slimda/m.ort"
    assert argv[argv.index("-r") + 1] == "50" and argv[argv.index("-x") + 1] == "1"
    assert {"-e", "-m", "-I", "-s"} <= set(argv) and argv[argv.index("-m") + 1] == "times"


@pytest.mark.parametrize("version, expected", [
    ((8, 2, 1), ["--int8", "--fp16", "--workspace=1024"]),
    ((8, 6, 1), ["--int8", "--fp16", "--memPoolSize=workspace:1024"]),
    ((10, 3, 0), ["--int8", "--fp16", "--memPoolSize=workspace:1024"]),
    ((11, 0, 0), ["--memPoolSize=workspace:1024"]),  # strongly typed: int8 from the model's Q/DQ nodes
])
def test_int8_command_line_per_tensorrt_version(version, expected):
    argv = trtexec_command("trtexec", version, onnx="m.qdq.onnx", precision="int8", save_engine="m.engine",
                           build_only=True)
    assert argv[:2] == ["trtexec", "--onnx=m.qdq.onnx"] and argv[2:2 + len(expected)] == expected
    assert not any(a.startswith("--calib") for a in argv)  # explicit quantization: the scales are in the model
