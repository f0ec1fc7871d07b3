"""CPU profiles of another machine over ssh (an Intel box for cpu-openvino, an ARM board, ...).

The ONNX file is copied to ``remote_dir`` on the host and ``<remote_python> -m slimda.profilers.worker``
measures it there with the same code a local profile runs; its JSON answer becomes the ``Measurement``.
The host needs Python with slimda and the runtime installed (no torch), key-based ssh login and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from slimda.errors import SlimdaError
from slimda.profilers.devices import DeviceProfile
from slimda.profilers.measurement import Measurement, MeasurementError, MeasureOptions
from slimda.profilers.transport import TransportError
from slimda.profilers.worker import REMOTE_FIELDS


def remote_model_path(path: Path, remote_dir: str) -> str:
    """Where the model goes on the host: named by content, so concurrent or repeated runs never clash."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{remote_dir.rstrip('/')}/{path.stem}-{digest}{path.suffix or '.onnx'}"


def worker_command(python: str, device: str, remote_onnx: str, opts: MeasureOptions) -> list[str]:
    options = {k: getattr(opts, k) for k in REMOTE_FIELDS}
    return [python, "-m", "slimda.profilers.worker", "--device", device, "--onnx", remote_onnx,
            "--options-json", json.dumps(options)]


def measure_over_ssh(path: Path, device: DeviceProfile, opts: MeasureOptions) -> Measurement:
    if not path.is_file():
        raise SlimdaError(f"ONNX file not found: {path}")
    target = opts.ssh_target()
    remote_onnx = remote_model_path(path, opts.remote_dir)
    target.put(path, remote_onnx)
    command = worker_command(opts.remote_python, device.name, remote_onnx, opts)
    result = target.run(command, timeout=opts.timeout_s)
    text = result.output
    if result.returncode == 127 or (result.returncode != 0 and "No such file or directory" in text
                                    and opts.remote_python in text):
        raise TransportError(f"{opts.remote_python!r} not found on {target.host} (command: {result.command}); "
                             "pass --remote-python with the interpreter that has slimda installed there")
    if "No module named" in text and "slimda" in text:
        raise TransportError(f"slimda is not installed for {opts.remote_python} on {target.host} "
                             f"(command: {result.command}); pip install slimda and its runtime there")
    answer = _last_json(result.stdout)
    if answer is None or "error" in answer:
        reason = answer["error"] if answer else result.tail()
        raise MeasurementError(f"{device.name} on {target.host}: {reason}")
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
