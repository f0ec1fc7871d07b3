"""CPU profiles of another machine over ssh (an Intel box for cpu-openvino, an ARM board, ...).

The ONNX file is copied to ``remote_dir`` on the host and ``<remote_python> -m slimda.profilers.worker``
measures it there with the same code a local profile runs; its JSON answer becomes the ``Measurement``.
A paired measurement (``measure_paired_over_ssh``) copies the reference too and the worker alternates the
two on the host, so a table built over ssh cancels the host's changes of speed as a local one does.
Copies are named by content and skipped when the host already has them (a table build times hundreds of
entries against one reference). The host needs Python with slimda and the runtime installed (no torch),
key-based ssh login and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from slimda.errors import SlimdaError
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.measurement import Measurement, MeasurementError, MeasureOptions, PairedMeasurement
from slimda.profilers.ssh import SSHTarget
from slimda.profilers.transport import TransportError
from slimda.profilers.worker import REMOTE_FIELDS


def remote_model_path(path: Path, remote_dir: str) -> str:
    """Where the model goes on the host: named by content, so concurrent or repeated runs never clash."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{remote_dir.rstrip('/')}/{path.stem}-{digest}{path.suffix or '.onnx'}"


def worker_command(python: str, device: str, remote_onnx: str, opts: MeasureOptions,
                   remote_reference: str | None = None) -> list[str]:
    options = {k: getattr(opts, k) for k in REMOTE_FIELDS}
    reference = ["--reference", remote_reference] if remote_reference else []
    return [python, "-m", "slimda.profilers.worker", "--device", device, "--onnx", remote_onnx,
            "--options-json", json.dumps(options), *reference]


def measure_over_ssh(path: Path, device: DeviceProfile, opts: MeasureOptions) -> Measurement:
    answer, target = _run_worker(path, None, device, opts)
    return _measurement(answer, target)


def measure_paired_over_ssh(path: Path, reference: Path, device: DeviceProfile,
                            opts: MeasureOptions) -> PairedMeasurement:
    """``measure_paired`` run on the host: the model and the reference alternate there."""
    answer, target = _run_worker(path, reference, device, opts)
    paired = answer.get("paired")
    if not isinstance(paired, dict):
        raise MeasurementError(f"{device.name} on {target.host}: the worker answered without the paired "
                               "measurement it was asked for; update slimda there")
    measurement = _measurement(answer, target).with_notes(f"paired with {reference.name} on {target.host}")
    return PairedMeasurement(measurement, float(paired["reference_ms"]), float(paired["vs_reference"]))


def _upload(target: SSHTarget, path: Path, remote_dir: str) -> str:
    if not path.is_file():
        raise SlimdaError(f"ONNX file not found: {path}")
    remote = remote_model_path(path, remote_dir)
    if not target.exists(remote):  # named by content: a file there is this very model, copied whole
        target.put(path, remote)
    return remote


def _run_worker(path: Path, reference: Path | None, device: DeviceProfile,
                opts: MeasureOptions) -> tuple[dict, SSHTarget]:
    target = opts.ssh_target()
    remote_onnx = _upload(target, path, opts.remote_dir)
    remote_reference = _upload(target, reference, opts.remote_dir) if reference is not None else None
    command = worker_command(opts.remote_python, device.name, remote_onnx, opts, remote_reference)
    result = target.run(command, timeout=opts.timeout_s)
    text = result.output
    if result.returncode == 127 or (result.returncode != 0 and "No such file or directory" in text
                                    and opts.remote_python in text):
        raise TransportError(f"{opts.remote_python!r} not found on {target.host} (command: {result.command}); "
                             "pass --remote-python with the interpreter that has slimda installed there")
    if "No module named" in text and "slimda" in text:
        raise TransportError(f"slimda is not installed for {opts.remote_python} on {target.host} "
                             f"(command: {result.command}); pip install slimda and its runtime there")
    if "unrecognized arguments: --reference" in text:
        raise TransportError(f"the slimda on {target.host} ({opts.remote_python}) is too old to time models "
                             "paired: update it there, or build the table with --unpaired")
    answer = _last_json(result.stdout)
    if answer is None or "error" in answer:
        reason = answer["error"] if answer else result.tail()
        raise MeasurementError(f"{device.name} on {target.host}: {reason}")
    return answer, target


def _measurement(answer: dict, target: SSHTarget) -> Measurement:
    measurement = Measurement.from_dict(answer)
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
