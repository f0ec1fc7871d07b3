"""``manifest.json`` of a deployment: what was chosen, why, how to feed it, and what produced it.

A user (or a fleet tool) reads the manifest to know the model's input (shape, channels, mean, std, class
names), its measured cost on the device, and checks the files against their SHA-256 before loading them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

# Keys every manifest holds; tests and fleet tools rely on them.
REQUIRED_KEYS: tuple[str, ...] = (
    "format", "config_id", "device", "budget", "predicted_latency_ms", "measured_latency_ms", "upem", "flops_m",
    "params_m", "input_shape", "channels", "mean", "std", "class_names", "files", "versions",
)

_DISTRIBUTIONS = ("slimda", "torch", "onnx", "onnxruntime", "openvino", "tensorrt", "fvcore")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(paths: Iterable[Path], root: Path) -> dict[str, dict[str, object]]:
    """``{relative name: {"sha256": ..., "bytes": ...}}`` for each file."""
    return {str(Path(p).relative_to(root)): {"sha256": sha256_file(p), "bytes": Path(p).stat().st_size}
            for p in paths}


def tool_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Versions of Python and of the installed tools that took part (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions.update(extra or {})
    return versions


def missing_keys(manifest: Mapping[str, object]) -> list[str]:
    return [k for k in REQUIRED_KEYS if k not in manifest]
