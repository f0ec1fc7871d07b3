"""The measuring side of a remote CPU profile: ``python -m slimda.profilers.worker``.

The ssh path copies the ONNX file to the remote host and runs this module there with the remote
interpreter. It measures locally (on that host) with the same code a local profile uses and prints one
JSON object on stdout: the ``Measurement`` (with ``--reference``, timed in turn with that model, plus
``"paired": {"reference_ms", "vs_reference"}``), or ``{"error": ...}`` with exit status 2. Nothing but
slimda's worker extra (onnx; no torch) and the runtime must be installed on that host:
pip install 'slimda[worker,onnxruntime]'.

``--serve`` keeps one worker up for a whole table build instead of one ssh connection and one Python start
per entry (~2 s each, against ~0.15 s for the entry itself on a small network). It answers requests, one
JSON object per line on stdin, with one JSON line each on stdout, after a first ``{"serving": PROTOCOL}``:

- ``{"op": "has", "path": P}`` → ``{"has": true|false}`` (a non-empty file there);
- ``{"op": "put", "path": P, "size": N}`` followed by exactly N raw bytes → ``{"ok": true}`` (written
  beside P and renamed, so P is whole or absent);
- ``{"op": "measure", "device": D, "onnx": P, "reference": R|null, "artifact": A|null, "options": {...}}``
  → what the one-shot form prints (``A``: the artefact to time instead of ``P``, ``--artifact-json``);
- end of input (or ``{"op": "bye"}``) ends it.

A request that fails answers ``{"error": ...}`` and the worker goes on. Runtimes that print to stdout
cannot break the protocol: the answers go to a private copy of stdout and stdout itself goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from slimda.profilers.config import COMMON_FIELDS, PROTOCOL, MeasureOptions
from slimda.tables import atomic_output


def artifact_from(request: dict | None):
    """The ``Artifact`` a request names (``remote.artifact_request``): kind, files on this host, notes."""
    if not request:
        return None
    from slimda.profilers.base import Artifact

    files = [Path(f) for f in request["files"]]
    return Artifact(str(request["kind"]), files[0], tuple(files[1:]), dict(request.get("notes") or {}))


def measure_answer(device: str, onnx: str, reference: str | None, options: dict,
                   artifact: dict | None = None) -> dict:
    """The JSON answer to one measurement request (raises on failure). With ``artifact``, that file (a
    deployment's IR, ``.ort``...) is what is loaded and timed; ``onnx`` still describes its inputs."""
    from slimda.profilers.devices import get_device
    from slimda.profilers.measurement import measure_local, measure_paired

    # the common fields only: this host measures in-process, whatever transport brought the request here
    opts = MeasureOptions.from_dict({k: v for k, v in options.items() if k in COMMON_FIELDS})
    dev = get_device(device)
    shipped = artifact_from(artifact)
    if reference:
        pair = measure_paired(Path(onnx), Path(reference), dev, opts, shipped)
        return {**pair.measurement.to_dict(),
                "paired": {"reference_ms": pair.reference_ms, "vs_reference": pair.vs_reference}}
    return measure_local(Path(onnx), dev, opts, shipped).to_dict()


def _error(err: BaseException) -> dict:
    return {"error": f"{type(err).__name__}: {err}"}


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise EOFError(f"input ended {left} bytes short of a {size}-byte file")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(requests: BinaryIO, answers: BinaryIO) -> int:
    """Answer requests until the input ends (see the module docstring)."""

    def send(obj: dict) -> None:
        answers.write(json.dumps(obj).encode() + b"\n")
        answers.flush()

    send({"serving": PROTOCOL})
    while True:
        line = requests.readline()
        if not line.strip():
            if not line:
                return 0
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "bye":
                return 0
            if op == "has":
                path = Path(request["path"])
                answer: dict = {"has": path.is_file() and path.stat().st_size > 0}
            elif op == "put":
                data = _read_exactly(requests, int(request["size"]))  # read it all, even if writing fails
                with atomic_output(request["path"]) as partial:
                    partial.write_bytes(data)
                answer = {"ok": True}
            elif op == "measure":
                answer = measure_answer(request["device"], request["onnx"], request.get("reference"),
                                        request.get("options") or {}, request.get("artifact"))
            else:
                answer = {"error": f"unknown request {op!r}"}
        except EOFError:
            return 1
        except Exception as err:  # noqa: BLE001 - any failure goes back to the caller as JSON
            answer = _error(err)
        send(answer)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slimda.profilers.worker",
                                     description="Measure one ONNX model on this host; print JSON.")
    parser.add_argument("--serve", action="store_true",
                        help="answer JSON requests on stdin until it ends (one worker for a whole table build)")
    parser.add_argument("--device", help="device profile name (a CPU device)")
    parser.add_argument("--onnx", help="path of the ONNX file on this host")
    parser.add_argument("--options-json", default="{}", help="MeasureOptions fields as a JSON object (its "
                        "common fields are used: threads, precision, batch, loop bounds...)")
    parser.add_argument("--reference", help="path of a reference ONNX file on this host: time the model in "
                        "alternating chunks with it and add their ratio")
    parser.add_argument("--artifact-json", help="the artefact to load and time instead of --onnx, as a JSON "
                        "object: kind, files (paths on this host; the first is loaded) and notes")
    args = parser.parse_args(argv)
    if args.serve:
        answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints of a runtime go to stderr
        return serve(sys.stdin.buffer, answers)
    if not (args.device and args.onnx):
        parser.error("--device and --onnx are required (or --serve)")
    try:
        answer = measure_answer(args.device, args.onnx, args.reference, json.loads(args.options_json),
                                json.loads(args.artifact_json) if args.artifact_json else None)
    except Exception as err:  # noqa: BLE001 - any failure goes back to the caller as JSON
        print(json.dumps(_error(err)))
        return 2
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
