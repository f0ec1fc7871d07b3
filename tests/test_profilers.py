"""Profilers on this host: statistics, device registry, real ONNX Runtime / OpenVINO / ORT-format runs,
failure rows, the torch-free import rule and the ``slimda profile`` command."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import numpy as np
import pytest

from profiler_helpers import fast_options, tiny_onnx
from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.config import AdbOptions, MeasureOptions, SSHOptions, TensorRTOptions
from slimda.profilers.devices import DEVICES, get_device, list_devices
from slimda.profilers.measurement import (
    PAIRED_COLUMNS,
    ROW_COLUMNS,
    Measurement,
    can_pair,
    check_target,
    failure_row,
    measure,
    measure_paired,
    measure_row,
)
from slimda.profilers.stats import LoopLimits, compute_stats, paired_runs, timed_runs


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("models") / "tiny_dynamic.onnx", batch="N")


# ---------------------------------------------------------------------------------------------------- stats

def test_stats_match_numpy_percentiles():
    values = [float(v) for v in np.random.default_rng(1).gamma(2.0, 3.0, size=257)]
    stats = compute_stats(values)
    assert stats.runs == 257
    for q, got in ((50, stats.p50), (90, stats.p90), (99, stats.p99)):
        assert got == pytest.approx(np.percentile(values, q))
    assert stats.mean == pytest.approx(np.mean(values))
    assert stats.std == pytest.approx(np.std(values))
    assert stats.cv == pytest.approx(np.std(values) / np.mean(values))
    assert stats.min == min(values) and stats.max == max(values)
    assert stats.p50 <= stats.p90 <= stats.p99


def test_loop_meets_both_minimums():
    calls = []
    start = time.perf_counter()
    latencies, complete = timed_runs(lambda: calls.append(1), LoopLimits(warmup=5, min_runs=40, min_time_s=0.05,
                                                                                   max_runs=10**8))
    assert complete and len(latencies) >= 40 and len(calls) == len(latencies) + 5
    assert time.perf_counter() - start >= 0.05


def test_loop_is_bounded():
    start = time.perf_counter()
    latencies, complete = timed_runs(lambda: time.sleep(0.005),
                                     LoopLimits(warmup=0, min_runs=100_000, min_time_s=0, max_time_s=0.1))
    assert not complete and 0 < len(latencies) < 100_000
    assert time.perf_counter() - start < 2
    assert all(lat >= 4.0 for lat in latencies)  # each run slept 5 ms


class WanderingMachine:
    """A fake clock (ns) whose machine runs 1.6x slower in every other 200 ms stretch: a shared host."""

    def __init__(self) -> None:
        self.now = 0

    def clock(self) -> int:
        return self.now

    def runner(self, cost_ms: float):
        def run() -> None:
            slow = 1.6 if (self.now // 200_000_000) % 2 else 1.0
            self.now += int(cost_ms * slow * 1e6)
        return run


def test_paired_loop_cancels_a_wandering_machine_speed():
    machine = WanderingMachine()
    limits = LoopLimits(warmup=2, min_runs=200, min_time_s=0.5, max_runs=10**6, max_time_s=60)
    runs = paired_runs(machine.runner(0.1), machine.runner(0.4), limits, chunk_s=0.02, clock=machine.clock)
    assert runs.complete and len(runs.latencies) >= 200 and sum(runs.latencies) >= 500
    assert min(runs.latencies) == pytest.approx(0.1) and max(runs.latencies) == pytest.approx(0.16)
    assert runs.ratio == pytest.approx(0.25)  # each latency alone moves by 60 %, their ratio not at all
    assert np.mean([r == pytest.approx(0.25) for r in runs.ratios]) > 0.6  # all but pairs astride a change
    bounded = paired_runs(machine.runner(1.0), machine.runner(1.0), LoopLimits(0, 10**5, 0, 10**6, 0.1),
                          clock=machine.clock)
    assert not bounded.complete and sum(bounded.latencies) < 150


def test_loop_limits_are_checked():
    with pytest.raises(ConfigError):
        LoopLimits(min_runs=10, max_runs=5)
    with pytest.raises(ConfigError):
        MeasureOptions(precision="int4")


# -------------------------------------------------------------------------------------------------- devices

def test_registry_has_the_design_devices():
    assert set(DEVICES) == {"cpu-onnxruntime", "cpu-openvino", "ort-mobile", "jetson-nano", "jetson-orin-nano",
                            "jetson-agx-orin", "tensorrt"}
    assert get_device("jetson-nano").default_opset == 13
    assert {d.default_opset for d in list_devices() if d.name != "jetson-nano"} == {17}
    assert all(get_device(n).where == "ssh" for n in ("jetson-nano", "jetson-orin-nano", "jetson-agx-orin"))
    assert get_device("cpu-openvino").precision == "fp32" and get_device("jetson-nano").precision == "fp16"


def test_unknown_device_lists_the_devices():
    with pytest.raises(ConfigError) as err:
        get_device("raspberry-pi")
    for name in DEVICES:
        assert name in str(err.value)


# ---------------------------------------------------------------------------------------- options, backends

def test_options_round_trip_and_read_an_older_slimdas_flat_keys():
    opts = MeasureOptions(threads=2, resolution=(32, 24), ssh=SSHOptions("me@box", 2222, ssh_options=("A=b",)),
                          adb=AdbOptions("R58"), tensorrt=TensorRTOptions(trt_version="8.2", metric="latency"))
    assert MeasureOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts
    flat = MeasureOptions.from_dict({"threads": 2, "resolution": [32, 24], "host": "me@box", "port": 2222,
                                     "ssh_options": ["A=b"], "timeout_s": 60.0, "adb_serial": "R58",
                                     "trt_version": "8.2", "trt_metric": "latency", "not_an_option": 1})
    assert flat.ssh == SSHOptions("me@box", 2222, ssh_options=("A=b",), timeout_s=60.0) and flat.host == "me@box"
    assert flat.adb == AdbOptions("R58", timeout_s=60.0) and flat.tensorrt == TensorRTOptions("8.2", metric="latency")
    here = MeasureOptions.from_dict(opts.common_dict())  # what the ssh worker measures with
    assert here == replace(opts, ssh=None, adb=None, tensorrt=TensorRTOptions())
    with pytest.raises(ConfigError, match="trt_metric must be"):
        TensorRTOptions(metric="fast")
    with pytest.raises(ConfigError, match="no --host"):
        SSHOptions("")


def test_registry_picks_one_backend_per_device_and_transport():
    from slimda.profilers.backends import backend_for, native_backend

    ssh, adb = MeasureOptions(ssh=SSHOptions("me@box")), MeasureOptions(adb=AdbOptions("R58"))
    expected = {
        "cpu-onnxruntime": ("onnxruntime-cpu", "ssh-worker", "onnxruntime-cpu"),
        "cpu-openvino": ("openvino-cpu", "ssh-worker", "openvino-cpu"),
        "ort-mobile": ("ort-format-proxy", "ssh-worker", "ort-format-adb"),
        "jetson-nano": ("trtexec", "trtexec", "trtexec"),
        "tensorrt": ("tensorrt-python", "trtexec", "tensorrt-python"),
    }
    for device, names in expected.items():
        dev = get_device(device)
        assert tuple(backend_for(dev, o).name for o in (MeasureOptions(), ssh, adb)) == names, device
        assert native_backend(dev).name == names[0]


def test_reaching_a_device_is_checked_in_one_place(model):
    with pytest.raises(ConfigError) as err:
        check_target("jetson-orin-nano", MeasureOptions(tensorrt=TensorRTOptions(trtexec_path="/opt/trtexec")))
    assert "--host user@jetson" in str(err.value) and "/opt/trtexec" in str(err.value)
    with pytest.raises(ConfigError, match="--adb is for the ort-mobile device, not cpu-onnxruntime"):
        measure(model, "cpu-onnxruntime", fast_options(adb=AdbOptions("R58")))
    check_target("jetson-nano", MeasureOptions(ssh=SSHOptions("me@jetson")))
    check_target("ort-mobile", MeasureOptions(adb=AdbOptions("R58")))


def test_artifacts_come_from_the_device_runtime(model, tmp_path):
    from slimda.export.artifacts import build_artifact

    opts = MeasureOptions(ssh=SSHOptions("me@box"))  # the transport does not change what the runtime loads
    assert build_artifact(model, get_device("cpu-onnxruntime"), tmp_path, opts).path == model
    ort = build_artifact(model, get_device("ort-mobile"), tmp_path, opts, ort_platform="amd64")
    assert (ort.kind, ort.path.name, ort.notes) == ("ort", "model.ort", {"ort_target_platform": "amd64"})
    ir = build_artifact(model, get_device("cpu-openvino"), tmp_path, opts)
    assert ir.kind == "openvino-ir" and [f.name for f in ir.files] == ["model.xml", "model.bin"]
    assert all(f.stat().st_size > 0 for f in (*ir.files, ort.path))


# ----------------------------------------------------------------------------------------- real measurements

def _check_row(m: Measurement, opts: MeasureOptions) -> dict:
    s = m.stats
    assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
    assert s.runs >= opts.min_runs
    assert s.min <= s.mean <= s.max
    assert 0 < s.std <= (s.max - s.min) / 2  # real runs vary, and never by more than their range allows
    assert s.cv == pytest.approx(s.std / s.mean)
    row = m.to_row()
    assert tuple(row) == ROW_COLUMNS
    assert row["status"] == "ok" and row["error"] == ""
    assert row["host"] and row["runtime_version"]
    dt.datetime.fromisoformat(row["measured_at"])
    return row


def test_onnxruntime_measurement(model):
    import onnxruntime as ort

    opts = fast_options(min_runs=30)
    row = _check_row(measure(model, "cpu-onnxruntime", opts), opts)
    assert row["runtime"] == "onnxruntime" and row["runtime_version"] == ort.__version__
    assert (row["precision"], row["threads"], row["batch"], row["input_shape"]) == ("fp32", 1, 1, "1x3x16x16")


def test_onnxruntime_batch_and_threads(dynamic_model):
    opts = fast_options(batch=3, threads=2)
    row = _check_row(measure(dynamic_model, "cpu-onnxruntime", opts), opts)
    assert (row["batch"], row["threads"], row["input_shape"]) == (3, 2, "3x3x16x16")


def test_paired_measurement_on_both_runtimes(model, tmp_path):
    other = tiny_onnx(tmp_path / "larger.onnx", size=32)
    opts = fast_options(min_runs=30)
    for device in ("cpu-onnxruntime", "cpu-openvino", "ort-mobile"):
        paired = measure_paired(other, model, device, replace(opts, cache_dir=str(tmp_path / "ort")))
        _check_row(paired.measurement, opts)
        assert paired.reference_ms > 0 and paired.vs_reference > 0
        assert "paired with tiny.onnx" in paired.measurement.notes
        row = paired.to_row()
        assert tuple(row) == ROW_COLUMNS + PAIRED_COLUMNS
        # the model against itself: the same latency (loose bounds: a test is no benchmark)
        assert 0.5 < measure_paired(model, model, device, opts).vs_reference < 2
    row = measure_row(other, "cpu-onnxruntime", opts, reference=model, entry_key="x")
    assert row["status"] == "ok" and float(row["vs_reference"]) > 0 and row["entry_key"] == "x"
    assert can_pair("cpu-openvino") and can_pair("cpu-openvino", MeasureOptions(ssh=SSHOptions("me@box")))  # worker
    assert not can_pair("jetson-nano") and not can_pair("ort-mobile", MeasureOptions(adb=AdbOptions("R58")))
    assert not can_pair("cpu-onnxruntime", MeasureOptions(adb=AdbOptions("R58")))
    with pytest.raises(ConfigError, match="cannot time two models in turn"):
        measure_paired(model, model, "jetson-nano", opts)


def test_fixed_batch_model_rejects_other_batch(model):
    with pytest.raises(ConfigError, match="fixed batch"):
        measure(model, "cpu-onnxruntime", fast_options(batch=4))


def test_openvino_measurement_records_precision_used(model):
    import openvino as ov

    opts = fast_options()
    m = measure(model, "cpu-openvino", opts)
    row = _check_row(m, opts)
    assert row["runtime"] == "openvino" and row["runtime_version"] == ov.get_version()
    assert row["precision"] == "fp32" and row["threads"] == 1
    assert "requested f32, compiled f32" in row["notes"]


def test_openvino_bf16_request_records_what_the_cpu_did(model):
    """Asking for bf16 is only a hint: the row must hold what the compiled model reports."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model)), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    expected = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[
        compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()]
    m = measure(model, "cpu-openvino", fast_options(precision="bf16"))
    assert m.precision == expected
    assert "requested bf16" in m.notes


def test_ort_format_conversion_matches_onnxruntime_tool(model, tmp_path):
    """Our in-process conversion makes the same .ort as `python -m onnxruntime.tools.convert_onnx_models_to_ort`."""
    import onnxruntime as ort

    from slimda.profilers.backends.ort_mobile import convert_to_ort, host_platform

    ours = convert_to_ort(model, host_platform(), tmp_path / "cache")
    assert ours.suffix == ".ort" and ours.stat().st_size > 0
    assert convert_to_ort(model, host_platform(), tmp_path / "cache") == ours  # cached
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny.onnx").write_bytes(model.read_bytes())
    subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", "--target_platform",
                    host_platform(), "--optimization_style", "Fixed", "--output_dir", str(tmp_path / "tool"),
                    str(src / "tiny.onnx")], check=True, capture_output=True, timeout=120)
    theirs = tmp_path / "tool" / "tiny.ort"
    assert theirs.stat().st_size == ours.stat().st_size  # the tool's own output is not byte-stable run to run
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for p in (ours, theirs)]
    np.testing.assert_array_equal(outs[0], outs[1])
    other = convert_to_ort(model, "arm" if host_platform() == "amd64" else "amd64", tmp_path / "cache")
    assert other != ours and other.read_bytes() != ours.read_bytes()  # platform-specific optimisations differ


def test_ort_mobile_desktop_proxy(model, tmp_path):
    from slimda.profilers.backends.ort_mobile import host_platform

    opts = fast_options(cache_dir=str(tmp_path / "ort-cache"))
    row = _check_row(measure(model, "ort-mobile", opts), opts)
    assert row["runtime"] == "onnxruntime-ort-format" and row["threads"] == 1
    assert f"--target_platform {host_platform()}" in row["notes"]
    assert list((tmp_path / "ort-cache").rglob("*.ort"))


def test_measurement_json_round_trip(model):
    m = measure(model, "cpu-onnxruntime", fast_options())
    again = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m


# ---------------------------------------------------------------------------------------------- failure rows

def test_corrupt_onnx_becomes_failure_row(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf model" * 3)
    with pytest.raises(SlimdaError):
        measure(bad, "cpu-onnxruntime", fast_options())
    row = measure_row(bad, "cpu-onnxruntime", fast_options(), config_id="w8-16", kind="block")
    assert row["status"] == "failed" and "corrupt.onnx" in row["error"]
    assert all(row[c] == "" for c in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "runs"))
    assert row["device"] == "cpu-onnxruntime" and row["config_id"] == "w8-16" and row["kind"] == "block"
    assert set(ROW_COLUMNS) <= set(row)
    for device in ("cpu-openvino", "ort-mobile"):
        assert measure_row(bad, device, fast_options(cache_dir=str(tmp_path)))["status"] == "failed"


def test_runtime_failure_becomes_failure_row(tmp_path):
    """A well-formed file the runtime rejects (unknown operator) fails its entry, not the table."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="slimda.test")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "unknown_op.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("slimda.test", 1)]), str(path))
    row = measure_row(path, "cpu-onnxruntime", fast_options())
    assert row["status"] == "failed" and "NoSuchOp" in row["error"]


def test_configuration_errors_are_not_swallowed(model):
    with pytest.raises(ConfigError, match=r"cpu-onnxruntime does not run fp16 .*supports fp32, int8"):
        measure_row(model, "cpu-onnxruntime", fast_options(precision="fp16"))
    row = failure_row("jetson-nano", "boom\nsecond line")
    assert row["status"] == "failed" and row["error"] == "boom | second line"


def test_tensorrt_device_without_tensorrt_says_how_to_install(model):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here: the missing-package message cannot be shown")
    with pytest.raises(ConfigError, match="pip install"):
        measure_row(model, "tensorrt", fast_options())


# ------------------------------------------------------------------------------------------------ no torch

def test_profilers_never_import_torch(model, tmp_path):
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import slimda.profilers as pkg
        names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
        for name in names:
            importlib.import_module(name)
        from slimda.profilers import measure, MeasureOptions
        opts = MeasureOptions(warmup=1, min_runs=5, min_time_s=0, cache_dir={str(tmp_path)!r})
        for device in ("cpu-onnxruntime", "cpu-openvino", "ort-mobile"):
            measure({str(model)!r}, device, opts)
        import slimda.commands.profile, slimda.export.artifacts
        assert "torch" not in sys.modules, "torch was imported"
        print(len(names))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip().splitlines()[-1]) >= 18  # 11 modules and the backends package's 7


# --------------------------------------------------------------------------------------------------- CLI

def _args(*argv: str) -> argparse.Namespace:
    from slimda.commands import profile

    parser = argparse.ArgumentParser()
    profile.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_lists_devices(capsys):
    from slimda.commands import profile

    assert profile.run(_args("--list-devices")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "runtime", "where", "precision", "precisions", "description"]
    for name in DEVICES:
        assert name in out
    nano = next(line for line in out.splitlines() if line.startswith("jetson-nano "))
    assert " fp32,fp16 " in nano  # the precisions each device supports, as the README says


def test_cli_times_one_model_and_prints_one_row(model, capsys):
    from slimda.commands import profile

    code = profile.run(_args("--device", "cpu-onnxruntime", "--onnx", str(model), "--warmup", "2",
                             "--min-runs", "20", "--min-time", "0.05", "--threads", "1"))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    assert tuple(rows[0]) == ROW_COLUMNS
    assert rows[0]["status"] == "ok" and int(rows[0]["runs"]) >= 20 and float(rows[0]["latency_ms_p50"]) > 0


def test_cli_out_file(model, tmp_path, capsys):
    from slimda.commands import profile

    out = tmp_path / "row.csv"
    profile.run(_args("--device", "cpu-openvino", "--onnx", str(model), "--min-runs", "10", "--min-time", "0",
                      "--warmup", "1", "--out", str(out)))
    assert capsys.readouterr().out == ""
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["device"] == "cpu-openvino"
    profile.run(_args("--device", "cpu-onnxruntime", "--onnx", str(model), "--reference", str(model), "--min-runs",
                      "10", "--min-time", "0", "--warmup", "1", "--out", str(tmp_path / "new" / "paired.csv")))
    rows = list(csv.DictReader((tmp_path / "new" / "paired.csv").open()))
    assert len(rows) == 1 and float(rows[0]["vs_reference"]) > 0 and float(rows[0]["reference_ms"]) > 0


def test_cli_unknown_device_and_missing_host(model):
    from slimda.commands import profile

    with pytest.raises(ConfigError, match="jetson-agx-orin"):
        profile.run(_args("--device", "tpu", "--onnx", str(model)))
    with pytest.raises(ConfigError) as err:
        profile.run(_args("--device", "jetson-nano", "--onnx", str(model)))
    assert "--host user@jetson" in str(err.value) and "/usr/src/tensorrt/bin/trtexec" in str(err.value)
    with pytest.raises(ConfigError, match="--device"):
        profile.run(_args("--onnx", str(model)))
    with pytest.raises(ConfigError, match="resolution"):
        profile.run(_args("--device", "cpu-onnxruntime", "--onnx", str(model), "--resolution", "big"))


def test_cli_refuses_options_of_the_other_mode(model):
    from slimda.commands import profile

    cases = [(("--onnx", str(model), "--bank", "runs/x"), "give one of them"),
             (("--bank", "runs/x", "--arch", "resnet18"), "not both"),
             (("--bank", "runs/x", "--reference", str(model)), "--reference goes with --onnx"),
             (("--onnx", str(model), "--unpaired", "--validate", "5"), "--unpaired, --validate only apply")]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            profile.run(_args("--device", "cpu-onnxruntime", *extra))


def test_cli_bank_and_arch_build_a_table_and_check_first(tmp_path):
    """The table-building path up to its first work (a real build: tests/test_latency_table.py)."""
    from slimda.commands import profile
    from slimda.commands.options import parse_resolution

    missing = str(tmp_path / "no run")
    with pytest.raises(SlimdaError, match="no model bank at"):
        profile.run(_args("--device", "cpu-openvino", "--bank", missing, "--validate", "5"))
    with pytest.raises(ConfigError, match="--host user@jetson"):  # before the bank is even read
        profile.run(_args("--device", "jetson-nano", "--bank", missing))
    with pytest.raises(ConfigError, match="--rounds must be at least 1"):
        profile.run(_args("--device", "cpu-openvino", "--bank", missing, "--rounds", "0"))
    with pytest.raises(ConfigError, match="give --out FILE"):
        profile.run(_args("--device", "cpu-openvino", "--arch", "digits-cnn"))
    assert parse_resolution("224x160") == (224, 160) and parse_resolution("96") == (96, 96)


def test_cli_options_become_typed_records():
    from slimda.commands.options import options_from_args

    opts = options_from_args(_args("--host", "me@box", "--port", "2222", "--identity", "k", "--remote-python",
                                   "/opt/py", "--trt-version", "8.2", "--threads", "2"))
    assert opts.ssh == SSHOptions("me@box", 2222, "k", remote_python="/opt/py") and opts.host == "me@box"
    assert opts.adb is None and opts.tensorrt.trt_version == "8.2" and opts.threads == 2
    phone = options_from_args(_args("--adb", "R58", "--perf-test", "/data/x"))
    assert phone.ssh is None and phone.adb == AdbOptions("R58", perf_test_path="/data/x")


def test_serving_worker_answers_each_request_and_survives_a_failing_one(model, tmp_path):
    """The protocol a table build over ssh speaks to one long-lived worker (here without ssh)."""
    from slimda.profilers.worker import PROTOCOL, serve

    copy = tmp_path / "host side" / "tiny copy.onnx"
    data = model.read_bytes()
    measure_request = {"op": "measure", "device": "cpu-onnxruntime", "onnx": str(copy), "reference": str(copy),
                       "options": fast_options().common_dict()}
    lines = [{"op": "has", "path": str(copy)}, {"op": "put", "path": str(copy), "size": len(data)},
             {"op": "has", "path": str(copy)}, measure_request,
             {**measure_request, "onnx": str(tmp_path / "missing.onnx")}, {"op": "dance"}]
    stream = b""
    for line in lines:
        stream += json.dumps(line).encode() + b"\n" + (data if line["op"] == "put" else b"")
    answers_out = io.BytesIO()
    assert serve(io.BytesIO(stream), answers_out) == 0
    answers = [json.loads(a) for a in answers_out.getvalue().splitlines()]
    assert answers[0] == {"serving": PROTOCOL} and len(answers) == len(lines) + 1
    assert answers[1] == {"has": False} and answers[2] == {"ok": True} and answers[3] == {"has": True}
    assert copy.read_bytes() == data and [p.name for p in copy.parent.iterdir()] == [copy.name]
    assert answers[4]["stats"]["runs"] > 0 and answers[4]["paired"]["vs_reference"] > 0
    assert "error" in answers[5] and "missing.onnx" in answers[5]["error"]
    assert answers[6] == {"error": "unknown request 'dance'"}
    # a file cut short by a dropped connection is never written
    short = json.dumps({"op": "put", "path": str(tmp_path / "cut.onnx"), "size": 100}).encode() + b"\n" + data[:10]
    assert serve(io.BytesIO(short), io.BytesIO()) == 1 and not (tmp_path / "cut.onnx").exists()


def test_each_device_lists_its_precisions_and_refuses_others(model):
    expected = {"cpu-onnxruntime": ("fp32", "int8"), "cpu-openvino": ("fp32", "bf16", "int8"),
                "ort-mobile": ("fp32", "int8"), "jetson-nano": ("fp32", "fp16"),
                "jetson-orin-nano": ("fp16", "int8"), "jetson-agx-orin": ("fp16", "int8"),
                "tensorrt": ("fp32", "fp16", "int8")}
    assert {name: d.precisions for name, d in DEVICES.items()} == expected
    assert all(d.precision in d.precisions for d in DEVICES.values())  # the default is one of them
    with pytest.raises(ConfigError, match=r"jetson-nano does not run int8 \(its Maxwell GPU has no fast INT8.*"
                                          r"supports fp32, fp16 \(default fp16\)"):
        MeasureOptions(precision="int8").precision_for(DEVICES["jetson-nano"])
    assert MeasureOptions().precision_for(DEVICES["jetson-orin-nano"]) == "fp16"
    # int8 is the model's (QDQ), not a switch: a float model asked to run int8 is refused before timing
    for device in ("cpu-onnxruntime", "cpu-openvino", "ort-mobile"):
        with pytest.raises(ConfigError, match="runs int8 from a quantized model.*no QuantizeLinear"):
            measure_row(model, device, fast_options(precision="int8"))
