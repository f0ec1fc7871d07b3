"""CPU profiles of another machine over ssh (an Intel box for cpu-openvino, an ARM board, ...).

The ONNX file is copied to ``remote_dir`` (``SSHOptions``) on the host and slimda's worker
(``<remote_python> -m slimda.profilers.worker``) measures it there with the same code a local profile runs;
its JSON answer becomes the ``Measurement``. A paired measurement copies the reference too and the worker
alternates the two on the host, so a table built over ssh cancels the host's changes of
speed as a local one does. Copies are named by content and skipped when the host already has them (a
table build times hundreds of entries against one reference).

One worker per (host, interpreter) stays up for the whole process (``--serve``: one ssh connection and one
Python start instead of one per entry, ~2 s each). Where it cannot start or dies (an older slimda there, a
runtime that crashed), that measurement runs the one-shot way, one ssh command, whose errors say what is
missing on the host. The host needs Python with slimda[worker] and the runtime installed (no torch), key-based
ssh login and nothing else.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shlex
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.base import (
    Artifact,
    Backend,
    LocalBackend,
    Measurement,
    MeasurementError,
    PairedMeasurement,
    timed_fields,
)
from slimda.profilers.config import PROTOCOL, MeasureOptions, SSHOptions
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.ssh import SSHTarget, remote_model_path, upload_once
from slimda.profilers.transport import TransportError


class RemoteBackend(Backend):
    """CPU devices on an ssh host, measured there by slimda's worker with the ``local`` backends' code."""

    name = "ssh-worker"

    def __init__(self, local: tuple[LocalBackend, ...]) -> None:
        self.local = local  # what the worker can run: pairing works where one of them serves the device

    def handles(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        return options.ssh is not None

    def measure(self, path: Path, device: DeviceProfile, options: MeasureOptions,
                artifact: Artifact | None = None) -> Measurement:
        answer, target = _run_worker(path, None, device, options, artifact)
        return _measurement(answer, target, artifact)

    def can_pair(self, device: DeviceProfile, options: MeasureOptions) -> bool:
        here = MeasureOptions(**options.common_dict())
        return options.adb is None and any(b.handles(device, here) for b in self.local)

    def measure_paired(self, path: Path, reference: Path, device: DeviceProfile, options: MeasureOptions,
                       artifact: Artifact | None = None) -> PairedMeasurement:
        """The model and the reference alternate on the host."""
        answer, target = _run_worker(path, reference, device, options, artifact)
        paired = answer.get("paired")
        if not isinstance(paired, dict):
            raise MeasurementError(f"{device.name} on {target.host}: the worker answered without the paired "
                                   "measurement it was asked for; update slimda there")
        measurement = _measurement(answer, target, artifact).with_notes(
            f"paired with {reference.name} on {target.host}")
        return PairedMeasurement(measurement, float(paired["reference_ms"]), float(paired["vs_reference"]))


def worker_command(python: str, device: str, remote_onnx: str, opts: MeasureOptions,
                   remote_reference: str | None = None, remote_artifact: dict | None = None) -> list[str]:
    reference = ["--reference", remote_reference] if remote_reference else []
    artifact = ["--artifact-json", json.dumps(remote_artifact)] if remote_artifact else []
    return [python, "-m", "slimda.profilers.worker", "--device", device, "--onnx", remote_onnx,
            "--options-json", json.dumps(opts.common_dict()), *reference, *artifact]


def artifact_request(artifact: Artifact | None, remote_files: list[str]) -> dict | None:
    """How a request names an artefact whose files were copied to ``remote_files`` (``worker.artifact_from``)."""
    if artifact is None:
        return None
    return {"kind": artifact.kind, "files": remote_files, "notes": dict(artifact.notes)}


def _ssh(opts: MeasureOptions) -> SSHOptions:
    if opts.ssh is None:
        raise ConfigError("no --host given for an ssh target")
    return opts.ssh


def _check_files(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and not path.is_file():
            raise SlimdaError(f"model file not found: {path}")


def _run_worker(path: Path, reference: Path | None, device: DeviceProfile, opts: MeasureOptions,
                artifact: Artifact | None = None) -> tuple[dict, SSHTarget]:
    _check_files(path, reference, *(artifact.files if artifact else ()))
    ssh = _ssh(opts)
    target = ssh.target()
    python = ssh.remote_python
    session = _session(target, python)
    if session is not None:
        try:
            return session.measure(path, reference, device, opts, artifact), target
        except _SessionLost:
            _drop_session(target, python)  # the one-shot way below says what went wrong, if anything
    remote_onnx = upload_once(target, path, ssh.remote_dir)
    remote_reference = upload_once(target, reference, ssh.remote_dir) if reference is not None else None
    remote_artifact = artifact_request(artifact, [upload_once(target, f, ssh.remote_dir)
                                                  for f in (artifact.files if artifact else ())])
    command = worker_command(python, device.name, remote_onnx, opts, remote_reference, remote_artifact)
    result = target.run(command, timeout=ssh.timeout_s)
    text = result.output
    if result.returncode == 127 or (result.returncode != 0 and "No such file or directory" in text
                                    and python in text):
        raise TransportError(f"{python!r} not found on {target.host} (command: {result.command}); "
                             "pass --remote-python with the interpreter that has slimda installed there")
    if "No module named" in text and "slimda" in text:
        raise TransportError(f"slimda is not installed for {python} on {target.host} "
                             f"(command: {result.command}); pip install 'slimda[worker,onnxruntime]' there "
                             "(or [worker,openvino])")
    if "unrecognized arguments: --artifact-json" in text:
        raise TransportError(f"the slimda on {target.host} ({python}) is too old to time a deployment's artefact "
                             "itself: update it there")
    if "unrecognized arguments: --reference" in text:
        raise TransportError(f"the slimda on {target.host} ({python}) is too old to time models "
                             "paired: update it there, or build the table with --unpaired")
    answer = _last_json(result.stdout)
    if answer is None or "error" in answer:
        reason = answer["error"] if answer else result.tail()
        raise MeasurementError(f"{device.name} on {target.host}: {reason}")
    return answer, target


# ------------------------------------------------------------------------------- a worker that stays up

class _SessionLost(Exception):
    """The serving worker is gone or never answered its greeting: use the one-shot way."""


class WorkerSession:
    """``<python> -m slimda.profilers.worker --serve`` on the host over one ssh connection (see the worker's
    docstring for the protocol). Answers are read with a deadline, so a hung host cannot hang a build."""

    def __init__(self, target: SSHTarget, python: str, start_timeout_s: float) -> None:
        self.target = target
        self.command = shlex.join([python, "-m", "slimda.profilers.worker", "--serve"])
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty runtime can never block on it
        self.buffer = b""
        try:
            self.proc = subprocess.Popen(target.ssh_argv() + [self.command], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.stderr)
        except OSError as err:
            self.stderr.close()
            raise _SessionLost(str(err)) from None
        try:
            greeting = self._answer(start_timeout_s, skip_other_lines=True)
        except (_SessionLost, TimeoutError, OSError):  # OSError: no select() on pipes (Windows): one-shot it is
            self.close()
            raise _SessionLost(f"no greeting from {self.command}") from None
        if greeting.get("serving") != PROTOCOL:
            self.close()
            raise _SessionLost(f"{self.command} speaks protocol {greeting.get('serving')}, not {PROTOCOL}")

    def _answer(self, timeout_s: float, skip_other_lines: bool = False) -> dict:
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while True:
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                if select.select([fd], [], [], left)[0]:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        raise _SessionLost(f"{self.command} on {self.target.host} ended")
                    self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            try:
                answer = json.loads(line)
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                return answer
            if not skip_other_lines:  # before the greeting, a login script may print; after it, nothing may
                raise _SessionLost(f"{self.command} answered {line[:200]!r}")

    def request(self, request: dict, timeout_s: float, payload: bytes = b"") -> dict:
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n" + payload)  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError) as err:  # ValueError: closed after an earlier request timed out
            raise _SessionLost(str(err)) from None
        try:
            return self._answer(timeout_s)
        except TimeoutError:
            self.close()
            raise TransportError(f"slimda's worker on {self.target.host} gave no answer to {request.get('op')} "
                                 f"within {timeout_s:g} s ({self.command})") from None

    def upload(self, path: Path, remote_dir: str, timeout_s: float) -> str:
        remote = remote_model_path(path, remote_dir)
        if not self.request({"op": "has", "path": remote}, 60.0).get("has"):
            data = path.read_bytes()
            answer = self.request({"op": "put", "path": remote, "size": len(data)}, timeout_s, data)
            if "error" in answer:
                raise TransportError(f"cannot copy {path} to {self.target.host}:{remote}: {answer['error']}")
        return remote

    def measure(self, path: Path, reference: Path | None, device: DeviceProfile, opts: MeasureOptions,
                artifact: Artifact | None = None) -> dict:
        ssh = _ssh(opts)
        remote_onnx = self.upload(path, ssh.remote_dir, ssh.timeout_s)
        remote_reference = self.upload(reference, ssh.remote_dir, ssh.timeout_s) if reference else None
        remote_artifact = artifact_request(artifact, [self.upload(f, ssh.remote_dir, ssh.timeout_s)
                                                      for f in (artifact.files if artifact else ())])
        answer = self.request({"op": "measure", "device": device.name, "onnx": remote_onnx,
                               "reference": remote_reference, "artifact": remote_artifact,
                               "options": opts.common_dict()}, ssh.timeout_s)
        if "error" in answer:
            raise MeasurementError(f"{device.name} on {self.target.host}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


_SESSIONS: dict[tuple[SSHTarget, str], WorkerSession | None] = {}  # None: that host's worker cannot serve


def _session(target: SSHTarget, python: str) -> WorkerSession | None:
    key = (target, python)
    if key not in _SESSIONS:
        try:
            _SESSIONS[key] = WorkerSession(target, python, target.connect_timeout_s + 60.0)
        except _SessionLost:
            _SESSIONS[key] = None
    return _SESSIONS[key]


def _drop_session(target: SSHTarget, python: str) -> None:
    session = _SESSIONS.pop((target, python), None)
    if session is not None:
        session.close()


def serving_workers() -> list[WorkerSession]:
    """The workers this process keeps up, one per (host, interpreter) that could serve."""
    return [session for session in _SESSIONS.values() if session is not None]


def close_sessions() -> None:
    """End every serving worker of this process (also run at exit)."""
    for target, python in list(_SESSIONS):
        _drop_session(target, python)


atexit.register(close_sessions)


def _measurement(answer: dict, target: SSHTarget, artifact: Artifact | None = None) -> Measurement:
    measurement = Measurement.from_dict(answer)
    if artifact is not None:  # the host timed a copy named by its content: the shipped file's bytes
        shipped = timed_fields(artifact.path)
        if not measurement.timed_sha256:
            raise MeasurementError(f"the worker on {target.host} did not say which file it timed: update slimda "
                                   "there")
        if measurement.timed_sha256 == shipped["timed_sha256"]:
            measurement = replace(measurement, **shipped)  # named as it ships, not as the copy there is
        elif artifact.kind != "ort":  # only an .ort of another platform is knowingly timed as a conversion
            raise MeasurementError(f"the worker on {target.host} timed {measurement.timed_file}, not the "
                                   f"{artifact.path.name} that ships (SHA-256 differs)")
    return replace(measurement, host=target.host).with_notes(
        f"measured over ssh on {target.host} (hostname {measurement.host}) by slimda.profilers.worker")


def _last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
