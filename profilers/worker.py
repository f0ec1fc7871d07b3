"""The measuring side of a remote CPU profile: ``python -m slimda.profilers.worker``.

The ssh path copies the ONNX file to the remote host and runs this module there with the remote
interpreter. It measures locally (on that host) with the same code a local profile uses and prints one
JSON object on stdout: the ``Measurement`` (with ``--reference``, timed in turn with that model, plus
``"paired": {"reference_ms", "vs_reference"}``), or ``{"error": ...}`` with exit status 2. Nothing but
slimda (which does not need torch for this) and the runtime must be installed on that host.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# MeasureOptions fields a remote measurement may receive (transport fields stay on the calling side).
REMOTE_FIELDS = ("threads", "precision", "batch", "resolution", "warmup", "min_runs", "min_time_s",
                 "max_runs", "max_time_s", "seed", "cache_dir")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slimda.profilers.worker",
                                     description="Measure one ONNX model on this host; print JSON.")
    parser.add_argument("--device", required=True, help="device profile name (a CPU device)")
    parser.add_argument("--onnx", required=True, help="path of the ONNX file on this host")
    parser.add_argument("--options-json", default="{}", help="MeasureOptions fields as a JSON object")
    parser.add_argument("--reference", help="path of a reference ONNX file on this host: time the model in "
                        "alternating chunks with it and add their ratio")
    args = parser.parse_args(argv)
    try:
        from slimda.profilers.devices import get_device
        from slimda.profilers.measurement import MeasureOptions, measure_local, measure_paired

        raw = json.loads(args.options_json)
        fields = {k: raw[k] for k in REMOTE_FIELDS if k in raw}
        if fields.get("resolution") is not None:
            fields["resolution"] = tuple(fields["resolution"])
        device, options = get_device(args.device), MeasureOptions(**fields)
        if args.reference:
            pair = measure_paired(Path(args.onnx), Path(args.reference), device, options)
            answer = {**pair.measurement.to_dict(),
                      "paired": {"reference_ms": pair.reference_ms, "vs_reference": pair.vs_reference}}
        else:
            answer = measure_local(Path(args.onnx), device, options).to_dict()
    except Exception as err:  # noqa: BLE001 - any failure goes back to the caller as JSON
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 2
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
