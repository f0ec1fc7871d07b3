"""The ssh transport against a real OpenSSH server on 127.0.0.1 that these tests start.

The "remote" machine is this one: the remote profile runs ``python -m slimda.profilers.worker`` over ssh
exactly as it would on an Intel box. The Jetson path runs over the same ssh with a stand-in ``trtexec``
(a shell script that records its arguments and replays the real TensorRT 8.2 Jetson Nano log from
tests/data/trtexec): everything but the GPU is real. adb is not installed here; its missing-tool path is
tested. The server is skipped (with the reason) only when /usr/sbin/sshd is absent.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from profiler_helpers import fast_options, tiny_onnx
from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.adb import AdbTarget
from slimda.profilers.backends import remote
from slimda.profilers.backends.trtexec import build_engine
from slimda.profilers.config import AdbOptions, SSHOptions, TensorRTOptions
from slimda.profilers.measurement import measure, measure_paired, measure_row
from slimda.profilers.ssh import SSHTarget
from slimda.profilers.transport import TransportError
from slimda.tables import sha256_file

SSHD = "/usr/sbin/sshd"
NANO_LOG = Path(__file__).parent / "data" / "trtexec" / "trt8.2.1_jetson_nano_tegra_x1.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throwaway sshd on 127.0.0.1:<free port> that accepts one generated key; stopped at the end."""
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is not installed (apt-get install openssh-server); the ssh tests need a real server")
    if not (shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("the OpenSSH client (ssh, ssh-keygen) is not installed")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    (d / "user_key").chmod(0o600)
    port = free_port()
    config = d / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}", "StrictModes no",
        "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", "",
    ]))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory sshd needs when run as root
    log = (d / "sshd.log").open("w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {(d / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("sshd did not start listening within 15 s")
    info = {"host": f"{getpass.getuser()}@127.0.0.1", "port": port, "key": str(d / "user_key"),
            "options": (f"UserKnownHostsFile={d / 'known_hosts'}",)}
    yield info
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(autouse=True)
def no_lasting_workers():
    """Every test starts without serving workers, and leaves none behind."""
    remote.close_sessions()
    yield
    remote.close_sessions()


@pytest.fixture
def target(sshd) -> SSHTarget:
    return SSHTarget(sshd["host"], sshd["port"], sshd["key"], sshd["options"])


def ssh_opts(sshd, ssh: dict | None = None, trt: dict | None = None, **overrides):
    """Short measurements on the test server: ``ssh`` overrides SSHOptions fields, ``trt`` TensorRTOptions'."""
    target = SSHOptions(sshd["host"], sshd["port"], sshd["key"], sshd["options"], **(ssh or {}))
    return fast_options(ssh=target, tensorrt=TensorRTOptions(**(trt or {})), **overrides)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("ssh models") / "tiny.onnx")


def test_remote_command_quotes_arguments(target, tmp_path):
    folder = tmp_path / "dir with space"
    folder.mkdir()
    (folder / "it's here.txt").write_text("hello over ssh\n")
    result = target.run(["cat", str(folder / "it's here.txt")], timeout=30)
    assert result.returncode == 0 and result.stdout == "hello over ssh\n"
    echoed = target.run(["printf", "%s|", "a b", "$HOME", "x;y", "*"], timeout=30)
    assert echoed.stdout == "a b|$HOME|x;y|*|"  # nothing expanded or split by the remote shell
    failing = target.run(["sh", "-c", "exit 3"], timeout=30)
    assert failing.returncode == 3
    with pytest.raises(TransportError, match="exit 3"):
        target.run(["sh", "-c", "exit 3"], timeout=30, check=True)


def test_put_and_get_files(target, tmp_path):
    local = tmp_path / "payload.bin"
    local.write_bytes(bytes(range(256)) * 40)
    remote = str(tmp_path / "remote side" / "new dir" / "payload copy.bin")
    target.put(local, remote)
    assert Path(remote).read_bytes() == local.read_bytes()
    back = target.get(remote, tmp_path / "back" / "p.bin")
    assert back.read_bytes() == local.read_bytes()
    with pytest.raises(TransportError, match="cannot copy"):
        target.get(str(tmp_path / "missing"), tmp_path / "x")


def remote_python(way: str, tmp_path: Path) -> str:
    """This interpreter, or for ``one-shot`` one whose worker cannot serve (what an older slimda there does)."""
    if way != "one-shot":
        return sys.executable
    python = tmp_path / "python without serve"
    python.write_text('#!/bin/sh\ncase " $* " in *" --serve "*) echo "unrecognized arguments: --serve" >&2; '
                      f'exit 2;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return str(python)


@pytest.mark.parametrize("way", ["serving worker", "one-shot"])
def test_remote_cpu_profile_over_ssh(sshd, model, tmp_path, way):
    """The path a user with an Intel box takes: copy the model, run slimda's worker there, parse its JSON."""
    python = remote_python(way, tmp_path)
    remote_dir = tmp_path / "remote profile dir"
    opts = ssh_opts(sshd, {"remote_python": python, "remote_dir": str(remote_dir)}, min_runs=25)
    m = measure(model, "cpu-onnxruntime", opts)
    assert len(remote.serving_workers()) == (1 if way == "serving worker" else 0)
    row = m.to_row()
    assert row["status"] == "ok" and row["host"] == sshd["host"] and row["runtime"] == "onnxruntime"
    assert m.stats.runs >= 25 and m.stats.p50 <= m.stats.p90 <= m.stats.p99
    assert "over ssh" in row["notes"] and row["input_shape"] == "1x3x16x16"
    copies = list(remote_dir.glob("tiny-*.onnx"))
    assert len(copies) == 1 and copies[0].read_bytes() == model.read_bytes()


def test_paired_profile_over_ssh_alternates_on_the_host_and_copies_the_reference_once(sshd, model, tmp_path):
    """A table built over ssh times every entry against one reference, on the host, as a local build does."""
    reference = tiny_onnx(tmp_path / "reference.onnx", size=32)
    remote_dir = tmp_path / "remote paired dir"
    opts = ssh_opts(sshd, {"remote_python": sys.executable, "remote_dir": str(remote_dir)}, min_runs=10)
    first = measure_paired(model, reference, "cpu-onnxruntime", opts)
    copy = next(remote_dir.glob("reference-*.onnx"))
    inode = copy.stat().st_ino
    row = measure_row(model, "cpu-onnxruntime", opts, reference=reference, config_id="tiny")
    assert copy.stat().st_ino == inode  # already there, named by content: not copied again
    assert 0 < first.vs_reference < 1 and first.reference_ms > first.measurement.stats.p50 * 0.5
    assert first.measurement.host == sshd["host"] and "over ssh" in first.measurement.notes
    assert "paired with reference.onnx" in first.measurement.notes
    assert row["status"] == "ok" and float(row["vs_reference"]) > 0 and row["config_id"] == "tiny"
    assert sorted(p.name.split("-")[0] for p in remote_dir.iterdir()) == ["reference", "tiny"]  # no partial copies


def test_one_serving_worker_per_host_and_a_lost_one_is_replaced(sshd, model, tmp_path):
    opts = ssh_opts(sshd, {"remote_python": sys.executable, "remote_dir": str(tmp_path / "r")})
    measure(model, "cpu-onnxruntime", opts)
    measure(model, "cpu-openvino", opts)
    sessions = remote.serving_workers()
    assert len(sessions) == 1 and sessions[0].proc.poll() is None
    sessions[0].proc.kill()  # the connection drops (or a runtime crashed the worker)
    sessions[0].proc.wait()
    m = measure(model, "cpu-onnxruntime", opts)  # this one the one-shot way, the next through a new worker
    assert m.stats.runs > 0 and m.host == sshd["host"]
    measure(model, "cpu-onnxruntime", opts)
    now = remote.serving_workers()
    assert len(now) == 1 and now[0] is not sessions[0] and now[0].proc.poll() is None


def test_a_worker_that_does_not_answer_in_time_stops_the_call_and_the_next_one_recovers(sshd, model, tmp_path):
    where = {"remote_python": sys.executable, "remote_dir": str(tmp_path / "r")}
    opts = ssh_opts(sshd, where)
    with pytest.raises(TransportError, match="gave no answer to measure within 1 s"):
        measure(model, "cpu-onnxruntime", ssh_opts(sshd, {**where, "timeout_s": 1.0}, min_time_s=3.0, max_time_s=6.0))
    assert measure(model, "cpu-onnxruntime", opts).stats.runs > 0


def test_paired_profile_names_an_old_worker(sshd, model, tmp_path):
    old_python = tmp_path / "old python"
    old_python.write_text("#!/bin/sh\necho 'usage: python -m slimda.profilers.worker [-h] --device DEVICE' >&2\n"
                          "echo 'python -m slimda.profilers.worker: error: unrecognized arguments: --reference x' >&2\n"
                          "exit 2\n")
    old_python.chmod(0o755)
    opts = ssh_opts(sshd, {"remote_python": str(old_python), "remote_dir": str(tmp_path / "r")})
    with pytest.raises(TransportError, match="too old to time models paired.*--unpaired"):
        measure_paired(model, model, "cpu-openvino", opts)


def test_remote_profile_reports_missing_python(sshd, model, tmp_path):
    opts = ssh_opts(sshd, {"remote_python": "/nonexistent/python3", "remote_dir": str(tmp_path / "r")})
    with pytest.raises(TransportError) as err:
        measure(model, "cpu-openvino", opts)
    assert "/nonexistent/python3" in str(err.value) and sshd["host"] in str(err.value)


def test_unreachable_host_names_host_and_command():
    closed = SSHTarget("nobody@127.0.0.1", port=free_port(), connect_timeout_s=3)
    with pytest.raises(SlimdaError) as err:
        closed.run(["echo", "hello world"], timeout=30)
    text = str(err.value)
    assert "nobody@127.0.0.1" in text and "echo 'hello world'" in text and "exit 255" in text


def test_unreachable_jetson_stops_a_table_build(model):
    opts = fast_options(ssh=SSHOptions("nobody@127.0.0.1", port=free_port(), connect_timeout_s=3),
                        tensorrt=TensorRTOptions(trt_version="8.2"))
    with pytest.raises(TransportError, match="nobody@127.0.0.1"):
        measure_row(model, "jetson-nano", opts)


def test_missing_trtexec_names_host_and_path(sshd, model, tmp_path):
    opts = ssh_opts(sshd, {"remote_dir": str(tmp_path / "r")}, {"trtexec_path": "/opt/nowhere/trtexec"})
    with pytest.raises(TransportError) as err:
        measure(model, "jetson-orin-nano", opts)
    text = str(err.value)
    assert sshd["host"] in text and "/opt/nowhere/trtexec" in text and "/usr/src/tensorrt/bin/trtexec" in text


@pytest.fixture
def stand_in_trtexec(tmp_path) -> tuple[Path, Path]:
    """A 'trtexec' (in a folder with a space) that records its argv and prints the real TRT 8.2 Nano log."""
    folder = tmp_path / "trt bin"
    folder.mkdir()
    args_file = tmp_path / "trtexec args.txt"
    script = folder / "trtexec"
    script.write_text(
        "#!/bin/sh\n"
        "# Test stand-in: record the arguments, write --saveEngine, replay a real captured TensorRT 8.2 log.\n"
        f"printf '%s\\n' \"$@\" > '{args_file}'\n"
        "for a in \"$@\"; do\n"
        "  case \"$a\" in --saveEngine=*) printf 'stand-in engine' > \"${a#--saveEngine=}\";; esac\n"
        "done\n"
        f"cat '{NANO_LOG}'\n")
    script.chmod(0o755)
    return script, args_file


def test_jetson_profile_over_ssh_with_replayed_log(sshd, model, tmp_path, stand_in_trtexec):
    script, args_file = stand_in_trtexec
    remote_dir = tmp_path / "jetson dir"
    opts = ssh_opts(sshd, {"remote_dir": str(remote_dir)}, {"trtexec_path": str(script)}, min_runs=40, min_time_s=2.0)
    m = measure(model, "jetson-nano", opts)  # version detected from the banner of `trtexec --help`
    assert (m.runtime, m.runtime_version, m.precision, m.threads) == ("tensorrt-trtexec", "8.2.1", "fp16", None)
    assert (m.stats.p50, m.stats.p99, m.stats.mean, m.stats.runs) == (90.0183, 91.2045, 90.1061, 35)
    assert m.host == sshd["host"] and "metric=GPU Compute Time" in m.notes
    args = args_file.read_text().splitlines()
    remote_onnx = next(a.split("=", 1)[1] for a in args if a.startswith("--onnx="))
    assert Path(remote_onnx).parent == remote_dir and Path(remote_onnx).read_bytes() == model.read_bytes()
    assert {"--fp16", "--workspace=1024", "--iterations=40", "--duration=2", "--percentile=99"} <= set(args)
    assert any(a.startswith("--exportTimes=") for a in args) and not any("memPoolSize" in a for a in args)


def test_jetson_engine_build_over_ssh(sshd, model, tmp_path, stand_in_trtexec):
    script, args_file = stand_in_trtexec
    opts = ssh_opts(sshd, {"remote_dir": str(tmp_path / "jetson dir")},
                    {"trtexec_path": str(script), "trt_version": "8.2"})
    built = build_engine(model, "jetson-nano", opts, local_engine=tmp_path / "engines here" / "tiny.engine")
    assert built.local_path.read_bytes() == b"stand-in engine" and built.trt_version == "8.2.1"
    args = args_file.read_text().splitlines()
    assert "--buildOnly" in args and f"--saveEngine={built.remote_path}" in args and "--fp16" in args


def test_jetson_re_measurement_loads_the_engine_that_ships(sshd, model, tmp_path, stand_in_trtexec):
    from slimda.profilers.backends import native_backend
    from slimda.profilers.devices import get_device

    script, args_file = stand_in_trtexec
    remote_dir = tmp_path / "jetson dir"
    opts = ssh_opts(sshd, {"remote_dir": str(remote_dir)}, {"trtexec_path": str(script), "trt_version": "8.2"})
    shipped = tmp_path / "deploy"
    shipped.mkdir()
    nano = get_device("jetson-nano")
    artifact = native_backend(nano).build_artifact(model, nano, shipped, opts)
    assert artifact.path == shipped / "model.engine"
    m = measure(model, "jetson-nano", opts, artifact)
    args = args_file.read_text().splitlines()
    loaded = next(a.split("=", 1)[1] for a in args if a.startswith("--loadEngine="))
    assert not any(a.startswith(("--onnx=", "--saveEngine=", "--fp16")) for a in args)  # timed, not rebuilt
    assert Path(loaded).read_bytes() == artifact.path.read_bytes()  # the very bytes that ship
    assert m.timed_file == "model.engine" and m.timed_sha256 == sha256_file(artifact.path)
    assert "the shipped engine model.engine, loaded" in m.notes and m.stats.p50 == 90.0183


@pytest.mark.parametrize("way", ["serving worker", "one-shot"])
def test_remote_openvino_times_the_ir_that_ships(sshd, model, tmp_path, way):
    from slimda.profilers.backends import native_backend
    from slimda.profilers.devices import get_device

    opts = ssh_opts(sshd, {"remote_python": remote_python(way, tmp_path), "remote_dir": str(tmp_path / "box")})
    shipped = tmp_path / "deploy"
    shipped.mkdir()
    device = get_device("cpu-openvino")
    artifact = native_backend(device).build_artifact(model, device, shipped, fast_options())
    m = measure(model, device, opts, artifact)
    assert m.timed_file == "model.xml" and m.timed_sha256 == sha256_file(artifact.path)
    assert m.runtime == "openvino" and m.host == sshd["host"]
    with pytest.raises(ConfigError, match="loads openvino-ir or onnx artefacts, not tensorrt-engine"):
        measure(model, "cpu-openvino", fast_options(), replace(artifact, kind="tensorrt-engine"))


def test_tensorrt_device_with_host_uses_trtexec(sshd, model, tmp_path, stand_in_trtexec):
    script, _ = stand_in_trtexec
    opts = ssh_opts(sshd, {"remote_dir": str(tmp_path / "gpu box")},
                    {"trtexec_path": str(script), "trt_version": "8.2.1"})
    row = measure_row(model, "tensorrt", opts, config_id="full")
    assert row["status"] == "ok" and row["runtime"] == "tensorrt-trtexec" and row["latency_ms_p50"] == 90.0183
    assert row["threads"] == "" and row["config_id"] == "full"


def test_adb_missing_program_is_reported(model, tmp_path):
    phone = AdbTarget("R58M123ABC", adb="adb-not-installed-here")
    with pytest.raises(TransportError, match="not installed"):
        phone.run(["true"], timeout=10)
    opts = fast_options(adb=AdbOptions("R58M123ABC", adb_path="adb-not-installed-here"), cache_dir=str(tmp_path))
    with pytest.raises(TransportError):
        measure(model, "ort-mobile", opts)
