"""The measuring side of a remote CPU profile: ``python -m slimda.profilers.worker``.

The ssh path copies the ONNX file to the remote host and runs this module there with the remote
interpreter. It measures locally (on that host) with the same code a local profile uses and prints one
JSON object on stdout: the ``Measurement``, or ``{"error": ...}`` with exit status 2. Nothing but
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
    args = parser.parse_args(argv)
    try:
        from slimda.profilers.devices import get_device
        from slimda.profilers.measurement import MeasureOptions, measure_local

        raw = json.loads(args.options_json)
        fields = {k: raw[k] for k in REMOTE_FIELDS if k in raw}
        if fields.get("resolution") is not None:
            fields["resolution"] = tuple(fields["resolution"])
        measurement = measure_local(Path(args.onnx), get_device(args.device), MeasureOptions(**fields))
    except Exception as err:  # noqa: BLE001 - any failure goes back to the caller as JSON
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 2
    print(json.dumps(measurement.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
