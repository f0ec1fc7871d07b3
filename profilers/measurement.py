"""The entry points: time an ONNX model on a device through the backend that serves it.

``measure(onnx, device, options) -> Measurement`` times one ONNX model on one device and raises on failure;
``measure_paired(onnx, reference, ...)`` times it in alternating chunks with a reference model (runtimes
slimda drives, here or over ssh) and also returns their ratio, which a wandering machine speed cancels out of;
``measure_row(...)`` is the form a LUT build uses: it always returns a flat row, a failure row
(``status=failed``, the error text, empty numbers) when the entry itself fails. Configuration mistakes and
unreachable targets (``ConfigError``, ``TransportError``) still raise there: they would fail every entry.
Which backend serves (device, options) is the registry's choice (``slimda.profilers.backends``); runtimes
are imported only when used, so this module loads without onnxruntime, openvino or tensorrt. The shared
types are re-exported here (they live in ``config`` and ``base``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from slimda.errors import ConfigError, SlimdaError
from slimda.profilers.backends import backend_for, local_backend
from slimda.profilers.base import (
    PAIRED_COLUMNS,
    Artifact,
    ROW_COLUMNS,
    Measurement,
    MeasurementError,
    PairedMeasurement,
    failure_row,
    now_iso,
)
from slimda.profilers.config import AdbOptions, MeasureOptions, SSHOptions, TensorRTOptions
from slimda.profilers.devices import DeviceProfile, get_device
from slimda.profilers.transport import TransportError

__all__ = [
    "PAIRED_COLUMNS", "ROW_COLUMNS", "AdbOptions", "MeasureOptions", "Measurement", "MeasurementError",
    "PairedMeasurement", "SSHOptions", "TensorRTOptions", "can_pair", "check_target", "failure_row", "measure",
    "measure_local", "measure_paired", "measure_row", "now_iso",
]

FATAL_ERRORS: tuple[type[BaseException], ...] = (ConfigError, TransportError)


def check_target(device: str | DeviceProfile, options: MeasureOptions | None = None) -> None:
    """Raise ``ConfigError`` when ``options`` cannot reach ``device`` (a Jetson without an ssh host, an adb
    serial for a CPU device), before any export or measurement work."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    backend_for(dev, opts).check(dev, opts)


def measure(onnx_path: str | Path, device: str | DeviceProfile, options: MeasureOptions | None = None,
            artifact: Artifact | None = None) -> Measurement:
    """Time ``onnx_path`` on ``device`` (or, given, its ``artifact``: the file a deployment ships, loaded as
    the device loads it; the measurement then records that file's SHA-256). Raises ``SlimdaError``
    subclasses on any failure."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    backend = backend_for(dev, opts)
    with _runtime_errors(f"{dev.name}: measuring {artifact.path if artifact else onnx_path}"):
        backend.check(dev, opts)
        return backend.measure(Path(onnx_path), dev, opts, artifact)


def measure_local(onnx_path: str | Path, device: str | DeviceProfile, options: MeasureOptions,
                  artifact: Artifact | None = None) -> Measurement:
    """Measure in this process with the device's Python runtime (what slimda's worker does on its host)."""
    dev = get_device(device)
    return local_backend(dev).measure(Path(onnx_path), dev, options, artifact)


@contextlib.contextmanager
def _runtime_errors(what: str) -> Iterator[None]:
    """Turn a runtime's own exception (their types differ per runtime) into a ``MeasurementError``."""
    try:
        yield
    except SlimdaError:
        raise
    except Exception as err:
        raise MeasurementError(f"{what} failed: {type(err).__name__}: {err}") from err


def can_pair(device: str | DeviceProfile, options: MeasureOptions | None = None) -> bool:
    """Whether ``measure_paired`` works for the device: its runtime is a Python runtime that slimda drives,
    here or on an ssh host through the worker, so two models can be alternated run by run (not on a phone
    through adb, not with trtexec)."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    return backend_for(dev, opts).can_pair(dev, opts)


def measure_paired(onnx_path: str | Path, reference_path: str | Path, device: str | DeviceProfile,
                   options: MeasureOptions | None = None, artifact: Artifact | None = None) -> PairedMeasurement:
    """Time ``onnx_path`` against ``reference_path`` (chunks of ~20 ms each in turn) on a device slimda
    drives (here, or on ``options.ssh``'s host through the ssh worker).

    A shared host or a CPU with unlocked clocks changes speed by tens of percent within seconds; both models
    feel it alike, so their ratio repeats far better than either latency (benchmarks/latency_noise.py)."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    backend = backend_for(dev, opts)
    if not backend.can_pair(dev, opts):
        raise ConfigError(f"{dev.name} cannot time two models in turn (only the Python runtimes slimda drives, "
                          "here or over ssh, can: cpu-onnxruntime, cpu-openvino, ort-mobile without --adb)")
    with _runtime_errors(f"{dev.name}: measuring {artifact.path if artifact else onnx_path} against "
                         f"{reference_path}"):
        backend.check(dev, opts)
        return backend.measure_paired(Path(onnx_path), Path(reference_path), dev, opts, artifact)


def measure_row(onnx_path: str | Path, device: str | DeviceProfile, options: MeasureOptions | None = None,
                reference: str | Path | None = None, **extra: object) -> dict[str, object]:
    """``measure(...).to_row()`` plus ``extra`` columns; a failing entry becomes a failure row. With a
    ``reference`` model, ``measure_paired(...).to_row()`` (the ``PAIRED_COLUMNS`` too).

    ``ConfigError`` and ``TransportError`` are re-raised: a bad option or an unreachable target would
    fail every entry of a table, so the caller should stop and report it once.
    """
    dev = get_device(device)
    opts = options or MeasureOptions()
    try:
        if reference is None:
            row = measure(onnx_path, dev, opts).to_row()
        else:
            row = measure_paired(onnx_path, reference, dev, opts).to_row()
    except FATAL_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of this entry becomes its row
        host = opts.host or (opts.adb.serial if opts.adb else "")
        row = failure_row(dev, err, runtime=dev.runtime, host=host, options=opts)
    row.update(extra)
    return row
