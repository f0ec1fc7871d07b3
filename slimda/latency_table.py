"""Latency lookup tables: predict any width configuration's latency on a device from block measurements.

A table is built for one (bank width space, device, input resolution, batch) and is one flat CSV:

- ``block`` rows: one top-level block of the backbone (its ``timing_blocks()``, plus the classifier head)
  exported alone at fixed widths and timed. The key names the block by its absolute shapes,
  ``<arch>.<class>(<ops>)|in=C|mid=C|out=C|s=S|hw=HxW`` (input channels, inner width, output channels,
  spatial stride, input size), so blocks at different positions with the same shapes share one entry.
- ``uniform`` rows: whole networks at the uniform widths of the space (returned as measured).
- ``whole`` rows: whole random sub-networks (the *fit set*), timed end to end.
- ``correction`` row: ``latency ≈ a·Σ blocks + b`` (+ ``c·weight MB`` where that term lowers the
  leave-one-out error), relative least squares over the uniform and fit-set networks. Timing a block alone
  adds a runtime call and layout conversions and loses cross-block fusion (constant or proportional
  costs: ``a``, ``b``); it also keeps the block's weights hot in the caches, which a whole network larger
  than the caches cannot (a cost that follows the weight bytes: ``c``).

The space is far too large to time every block key (digits-cnn: ~470k configurations, resnet18 ~1e10), so
a build times every key of the uniform and fit-set networks and every key of the block *slots* with few
possible keys (``enumerate_limit``); any other key is predicted by a per-group regression (nn-Meter-style
kernel predictor): relative least squares of the measured keys of its group (same block kind, stride and
input size) on the terms of a conv block's FLOPs, ``1, in, mid, out, in·mid, mid², mid·out, in·out``.
``Prediction.fallback_blocks`` counts the blocks of a prediction that came from it.

Whole networks are timed in several rounds spread over the build and the table keeps their median: on a
shared machine the load drifts over minutes. Builds resume: each row is appended and flushed as soon as it
is measured and entries already in the file are skipped; an entry that fails on the device becomes a
``status=failed`` row with the error and is left out of every fit and prediction.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimda.bank import ModelBank
from slimda.console import one_torch_thread, progress_bar
from slimda.errors import ConfigError, SlimdaError
from slimda.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear, set_widths, to_static
from slimda.profilers import measurement
from slimda.profilers.devices import DeviceProfile, get_device
from slimda.profilers.measurement import ROW_COLUMNS, MeasureOptions
from slimda.space import WidthConfig, WidthSpace

ENTRY_KINDS = ("block", "uniform", "whole", "correction")
TABLE_COLUMNS: tuple[str, ...] = (
    "entry_kind", "entry_key", "config_id", *ROW_COLUMNS, "weights_mb",
    "arch", "net_input_shape", "num_classes", "opset", "coef_a", "coef_b_ms", "coef_c_ms_per_mb",
)
HEAD = "ca"  # the test-time head whole networks are exported with (a Linear, like Ct and Cs)
FIT_SEED_OFFSET = 0
VALIDATION_SEED_OFFSET = 1_000_003  # held-out configurations never share the fit set's random stream


# ------------------------------------------------------------------------------------------------ the plan

@dataclass(frozen=True)
class Channels:
    """Where a block's channel count comes from: a width site, or a fixed number (input image, classes)."""

    site: str | None
    fixed: int

    def value(self, widths: Mapping[str, int]) -> int:
        return int(widths[self.site]) if self.site else self.fixed


@dataclass(frozen=True)
class BlockSlot:
    """One position of the network: a block whose key follows the widths of a configuration."""

    name: str
    kind: str
    cin: Channels
    mid: Channels
    cout: Channels
    stride: int
    hw: tuple[int, int]
    weights_coef: tuple[float, ...] = ()  # parameters as a polynomial of the channels (see ``_features``)

    @property
    def group(self) -> str:
        """Kind, stride and input size: keys of one group differ only in their channel counts."""
        return f"{self.kind}|s={self.stride}|hw={self.hw[0]}x{self.hw[1]}"

    def channels(self, widths: Mapping[str, int]) -> tuple[int, int, int]:
        return self.cin.value(widths), self.mid.value(widths), self.cout.value(widths)

    def key(self, widths: Mapping[str, int]) -> str:
        cin, mid, cout = self.channels(widths)
        return f"{self.kind}|in={cin}|mid={mid}|out={cout}|s={self.stride}|hw={self.hw[0]}x{self.hw[1]}"

    def weights_mb(self, widths: Mapping[str, int]) -> float:
        """fp32 weight bytes of the block in MB (exact: parameters are a polynomial of the channels)."""
        if not self.weights_coef:
            return 0.0
        return max(0.0, float((_features([self.channels(widths)]) @ np.asarray(self.weights_coef))[0]) * 4 / 1e6)

    def possible_keys(self, space: WidthSpace) -> int:
        sites = {c.site for c in (self.cin, self.mid, self.cout) if c.site}
        return math.prod(len(space.choices[s]) for s in sites)


@dataclass(frozen=True)
class NetPlan:
    """The block slots of one architecture at one input shape (``batch x channels x H x W``)."""

    arch: str
    input_shape: tuple[int, int, int, int]
    num_classes: int
    slots: tuple[BlockSlot, ...]
    sites: tuple[str, ...]  # the width space's site order (configuration ids list widths in it)

    @property
    def input_text(self) -> str:
        return "x".join(str(d) for d in self.input_shape)

    def keys(self, config: WidthConfig) -> list[str]:
        widths = config.as_dict()
        return [slot.key(widths) for slot in self.slots]


def _kind(arch: str, module: nn.Module) -> str:
    """``<arch>.<class>(<ops>)``: the class and its layer sequence, so different structures never share keys."""
    ops = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0]
            ops.append(f"dw{k}" if m.groups > 1 else f"{k}")
        elif isinstance(m, nn.MaxPool2d):
            ops.append("mp")
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            ops.append("gap")
    if getattr(module, "use_res_connect", False):
        ops.append("res")
    return f"{arch}.{type(module).__name__.lower()}({','.join(ops)})"


def _slim_convs(module: nn.Module) -> list[SlimConv2d]:
    return [m for m in module.modules() if isinstance(m, SlimConv2d)]


def _active_params(module: nn.Module) -> int:
    """Parameters of ``module`` at its active widths, from shapes alone (nothing is copied)."""
    total = 0
    for m in module.modules():
        if isinstance(m, SlimConv2d):
            groups = m._active_groups()
            total += m.active_out * (m.active_in // groups) * m.kernel_size[0] * m.kernel_size[1]
            total += m.active_out if m.bias is not None else 0
        elif isinstance(m, SlimBatchNorm2d):
            total += 2 * m.active_out if m.affine else 0
        elif isinstance(m, SlimLinear):
            total += m.active_out * m.active_in + (m.active_out if m.bias is not None else 0)
    return total


def _weights_coef(module: nn.Module, cin: Channels, mid: Channels, cout: Channels) -> tuple[float, ...]:
    """Fit the block's parameter count on ``_features`` from probe widths (3 per site): exact, since every
    block here is a sum of conv/linear (products of two channel counts) and norm (one count) layers."""
    sites = {c.site: c.fixed for c in (cin, mid, cout) if c.site}
    probes: list[dict[str, int]] = [{}]
    for site, top in sites.items():
        probes = [{**p, site: v} for p in probes for v in sorted({max(1, top // 4), max(1, top // 2), top})]
    channels, params = [], []
    for widths in probes:
        set_widths(module, widths)
        channels.append((cin.value(widths), mid.value(widths), cout.value(widths)))
        params.append(_active_params(module))
    coef, *_ = np.linalg.lstsq(_features(channels), np.asarray(params, dtype=float), rcond=None)
    return tuple(float(c) for c in coef)


@torch.no_grad()
def plan_for(bank: ModelBank, resolution: tuple[int, int], batch: int = 1) -> NetPlan:
    """Trace the bank's blocks once (shapes do not depend on widths) and name each block's channel sites."""
    was_training = bank.training
    bank.eval()
    x = torch.zeros(1, bank.in_channels, *resolution)
    slots: list[BlockSlot] = []
    prev = Channels(None, bank.in_channels)
    try:
        set_widths(bank, bank.space.largest().as_dict())
        for name, block in bank.backbone.timing_blocks():
            hw = (int(x.shape[2]), int(x.shape[3]))
            x = block(x)
            stride = max(1, round(hw[0] / int(x.shape[2])))
            convs = _slim_convs(block)
            if convs:
                first, last = convs[0], convs[-1]
                cin = Channels(first.in_site, first.max_in)
                mid = Channels(first.out_site, first.max_out)
                cout = Channels(last.out_site, last.max_out)
            else:  # pooling: channels pass through
                cin = mid = cout = prev
            coef = _weights_coef(block, cin, mid, cout)
            slots.append(BlockSlot(name, _kind(bank.arch, block), cin, mid, cout, stride, hw, coef))
            prev = cout
        head = Channels(None, bank.num_classes)
        slots.append(BlockSlot("head", f"{bank.arch}.linear", prev, prev, head, 1, (1, 1),
                               _weights_coef(bank.head_a, prev, prev, head)))
    finally:
        set_widths(bank, bank.config.as_dict())
        bank.train(was_training)
    return NetPlan(bank.arch, (batch, bank.in_channels, *resolution), bank.num_classes, tuple(slots),
                   bank.space.site_names)


@lru_cache(maxsize=8)
def _plan_from_description(arch: str, input_shape: tuple[int, int, int, int], num_classes: int) -> NetPlan:
    bank = ModelBank(arch, num_classes, input_shape[1])
    return plan_for(bank, (input_shape[2], input_shape[3]), input_shape[0])


def static_block(bank: ModelBank, plan: NetPlan, slot: BlockSlot, config: WidthConfig) -> nn.Module:
    """Slot ``slot`` of ``config`` as plain torch layers (the block is exported and timed alone)."""
    set_widths(bank, config.as_dict())
    try:
        if slot.name == "head":
            module = to_static(bank.head_a)
        else:
            module = to_static(dict(bank.backbone.timing_blocks())[slot.name])
    finally:
        set_widths(bank, bank.config.as_dict())
    return module.eval()


def block_input_shape(plan: NetPlan, slot: BlockSlot, config: WidthConfig) -> tuple[int, ...]:
    cin = slot.cin.value(config.as_dict())
    if slot.name == "head":
        return (plan.input_shape[0], cin)
    return (plan.input_shape[0], cin, *slot.hw)


# --------------------------------------------------------------------------------------- unseen keys

_KEY_FIELDS = ("in", "mid", "out")


def key_channels(key: str) -> tuple[int, int, int]:
    fields = dict(part.split("=", 1) for part in key.split("|")[1:])
    return tuple(int(fields[f]) for f in _KEY_FIELDS)  # type: ignore[return-value]


def key_group(key: str) -> str:
    parts = key.split("|")
    return "|".join([parts[0], *(p for p in parts[1:] if p.split("=", 1)[0] not in _KEY_FIELDS)])


def _features(channels: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """``1, in, mid, out, in·mid, mid², mid·out, in·out``: the terms of a conv block's FLOPs and parameters."""
    c = np.asarray(channels, dtype=float)
    cin, mid, cout = c[:, 0], c[:, 1], c[:, 2]
    return np.stack([np.ones_like(cin), cin, mid, cout, cin * mid, mid * mid, mid * cout, cin * cout], axis=1)


class GroupModel:
    """Latency of a block group as a function of its channel counts: least squares on ``_features``,
    minimising relative errors (what a ±10 % target asks for), floored at half the fastest measured key."""

    def __init__(self, channels: Sequence[tuple[int, int, int]], latencies_ms: Sequence[float]) -> None:
        x = _features(channels)
        y = np.asarray(latencies_ms, dtype=float)
        self.scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
        weights = 1.0 / np.maximum(y, 1e-12)
        self.coef, *_ = np.linalg.lstsq(x / self.scale * weights[:, None], y * weights, rcond=1e-6)
        self.floor = 0.5 * float(y.min())
        self.points = len(y)

    def predict(self, channels: tuple[int, int, int]) -> float:
        value = float(((_features([channels]) / self.scale) @ self.coef)[0])
        return max(value, self.floor)


# ------------------------------------------------------------------------------------------ correction

CORRECTION_TERMS = ("sum", "sum+weights")


@dataclass(frozen=True)
class Correction:
    """``latency ≈ a·Σ blocks + c·weight MB + b`` (``c`` = 0 for the plain ``sum`` form)."""

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    terms: str = "sum"
    points: int = 0
    loo_error: float = float("nan")  # leave-one-out mean |relative error| over the fit networks

    def __call__(self, block_sum_ms: float, weights_mb: float) -> float:
        return self.a * block_sum_ms + self.c * weights_mb + self.b


def _design(sums: np.ndarray, weights: np.ndarray, terms: str) -> np.ndarray:
    cols = [sums, np.ones_like(sums)] + ([weights] if terms == "sum+weights" else [])
    return np.stack(cols, axis=1)


def _relative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return coef


def fit_correction(sums: Sequence[float], weights_mb: Sequence[float], measured: Sequence[float],
                   terms: str = "auto") -> Correction:
    """Relative least squares of measured whole networks on their block sums (and weight MB).

    ``terms="auto"`` keeps the weight term only where it lowers the leave-one-out error: on CPUs whose
    caches hold a lone block's weights but not a whole network's, the whole network also streams its
    weights from memory, a cost that grows with the weight bytes rather than with the block sum.
    """
    s, w, y = (np.asarray(v, dtype=float) for v in (sums, weights_mb, measured))
    if len(y) < 2:
        return Correction(points=len(y))
    candidates = [terms] if terms != "auto" else (["sum"] if len(y) < 8 else list(CORRECTION_TERMS))
    best: Correction | None = None
    for form in candidates:
        x = _design(s, w, form)
        errors = []
        for k in range(len(y)) if len(y) > x.shape[1] + 1 else ():
            keep = np.arange(len(y)) != k
            errors.append(abs(float(x[k] @ _relative_lstsq(x[keep], y[keep])) / y[k] - 1))
        coef = _relative_lstsq(x, y)
        fit = Correction(float(coef[0]), float(coef[1]), float(coef[2]) if len(coef) > 2 else 0.0, form, len(y),
                         float(np.mean(errors)) if errors else float("nan"))
        if best is None or fit.loo_error < best.loo_error:
            best = fit
    assert best is not None
    return best


# ------------------------------------------------------------------------------------------------ the table

@dataclass(frozen=True)
class Prediction:
    """A predicted latency and how it was obtained (``source``: uniform, whole or blocks)."""

    config_id: str
    latency_ms: float
    source: str
    block_sum_ms: float
    weights_mb: float
    fallback_blocks: int


def _float(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _ok(row: Mapping[str, object]) -> bool:
    return row.get("status") == "ok" and _float(row.get("latency_ms_p50")) is not None


def normalise_row(row: Mapping[str, object]) -> dict[str, object]:
    """A row with exactly the table's columns, in order ("" for missing values)."""
    return {c: ("" if row.get(c) is None else row.get(c)) for c in TABLE_COLUMNS}


def _medians(rows: Iterable[Mapping[str, object]], kinds: tuple[str, ...], field: str) -> dict[str, float]:
    """Median latency per entry over its ok rows (whole networks are timed in several rounds)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["entry_kind"] in kinds and _ok(row):
            values.setdefault(str(row[field]), []).append(float(row["latency_ms_p50"]))  # type: ignore[arg-type]
    return {k: float(np.median(v)) for k, v in values.items()}


class LatencyTable:
    """A device's latency lookup table for one bank width space: ``predict(config) -> ms``."""

    def __init__(self, rows: Iterable[Mapping[str, object]], plan: NetPlan | None = None) -> None:
        self.rows = [normalise_row(r) for r in rows]
        meta = next((r for r in self.rows if r["arch"] and r["net_input_shape"]), None)
        if meta is None:
            raise SlimdaError("latency table has no rows naming its architecture and input shape")
        self.arch = str(meta["arch"])
        self.device = str(meta["device"])
        self.input_shape = tuple(int(d) for d in str(meta["net_input_shape"]).split("x"))
        self.num_classes = int(meta["num_classes"])  # type: ignore[arg-type]
        self.plan = plan or _plan_from_description(self.arch, self.input_shape, self.num_classes)  # type: ignore[arg-type]
        self.block_ms = _medians(self.rows, ("block",), "entry_key")
        self.whole_ms = _medians(self.rows, ("uniform", "whole"), "config_id")
        self.uniform_ids = {str(r["config_id"]) for r in self.rows if r["entry_kind"] == "uniform"}
        self.fit_ids = {str(r["config_id"]) for r in self.rows if r["entry_kind"] == "whole"}
        self._groups: dict[str, GroupModel | None] = {}
        self._memo: dict[str, tuple[float, float, bool]] = {}
        stored = [r for r in self.rows if r["entry_kind"] == "correction" and r["status"] == "ok"]
        if stored:
            r = stored[-1]
            self.correction = Correction(float(r["coef_a"]), float(r["coef_b_ms"]),  # type: ignore[arg-type]
                                         _float(r["coef_c_ms_per_mb"]) or 0.0, str(r["entry_key"]))
        else:
            self.correction = self.fit_correction()

    # -- persistence
    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        rows, _complete = read_rows(Path(path))
        if not rows:
            raise SlimdaError(f"latency table {path} has no rows")
        return cls(rows)

    def save(self, path: str | os.PathLike) -> Path:
        from slimda.tables import write_csv_atomic

        return write_csv_atomic(path, self.rows)

    # -- prediction
    def block_entry(self, slot: BlockSlot, widths: Mapping[str, int]) -> tuple[float, float, bool]:
        """(ms, weight MB, whether the regression predicted the latency) of one block."""
        key = slot.key(widths)
        if key not in self._memo:
            mb = slot.weights_mb(widths)
            if key in self.block_ms:
                self._memo[key] = (self.block_ms[key], mb, False)
            else:
                model = self._group_model(slot.group)
                if model is None:
                    raise SlimdaError(f"latency table for {self.device} has no measured block like {key}: "
                                      f"rebuild it with slimda-profile --device {self.device}")
                self._memo[key] = (model.predict(slot.channels(widths)), mb, True)
        return self._memo[key]

    def _group_model(self, group: str) -> GroupModel | None:
        if group not in self._groups:
            points = [(key_channels(k), v) for k, v in self.block_ms.items() if key_group(k) == group]
            self._groups[group] = GroupModel(*zip(*points)) if points else None  # type: ignore[call-arg]
        return self._groups[group]

    def block_sum(self, config: WidthConfig) -> tuple[float, float, int]:
        """(Σ block latencies in ms, Σ weight MB, number of blocks the regression predicted) of ``config``."""
        if config.arch != self.arch:
            raise ConfigError(f"configuration is for {config.arch!r}; this latency table is for {self.arch!r}")
        widths = config.as_dict()
        total = mb = 0.0
        fallback = 0
        for slot in self.plan.slots:
            ms, weights, used = self.block_entry(slot, widths)
            total, mb, fallback = total + ms, mb + weights, fallback + used
        return total, mb, fallback

    def explain(self, config: WidthConfig) -> Prediction:
        total, mb, fallback = self.block_sum(config)
        if config.id in self.whole_ms:
            source = "uniform" if config.id in self.uniform_ids else "whole"
            return Prediction(config.id, self.whole_ms[config.id], source, total, mb, fallback)
        return Prediction(config.id, max(self.correction(total, mb), 1e-6), "blocks", total, mb, fallback)

    def predict(self, config: WidthConfig) -> float:
        """Median latency of ``config`` in ms: as measured for the uniform widths, else the corrected Σ."""
        return self.explain(config).latency_ms

    def fit_correction(self, terms: str = "auto") -> Correction:
        """Fit the correction on the measured whole networks (uniform and fit set)."""
        sums, mbs, ys = [], [], []
        for config_id, measured in sorted(self.whole_ms.items()):
            try:
                total, mb, _ = self.block_sum(self.config(config_id))
            except SlimdaError:
                continue
            sums.append(total)
            mbs.append(mb)
            ys.append(measured)
        return fit_correction(sums, mbs, ys, terms)

    def config(self, config_id: str) -> WidthConfig:
        """The configuration with this id (the table knows its sites, not its ratio grid)."""
        values = config_id.split("-")
        if len(values) != len(self.plan.sites) or not all(v.isdigit() for v in values):
            raise SlimdaError(f"{config_id!r} is not a configuration of {self.arch}")
        return WidthConfig(self.arch, tuple(zip(self.plan.sites, (int(v) for v in values))))

    def summary(self) -> dict[str, object]:
        c = self.correction
        return {"arch": self.arch, "device": self.device, "input": "x".join(map(str, self.input_shape)),
                "block_entries": len(self.block_ms), "uniform_entries": len(self.uniform_ids & set(self.whole_ms)),
                "whole_entries": len(self.fit_ids & set(self.whole_ms)),
                "failed_rows": sum(1 for r in self.rows if r["status"] == "failed"),
                "correction": c.terms, "coef_a": round(c.a, 4), "coef_b_ms": round(c.b, 4),
                "coef_c_ms_per_mb": round(c.c, 5)}


def table_path(run_dir: str | os.PathLike, device: str) -> Path:
    """Where ``slimda-profile --device DEVICE --bank RUN`` writes the table of a run."""
    return Path(run_dir) / "latency" / f"{device}.csv"


def load_table(run_dir: str | os.PathLike, device: str) -> LatencyTable:
    """The run's table for ``device``; a missing one raises ``SlimdaError`` saying how to build it."""
    path = table_path(run_dir, device)
    if not path.is_file():
        raise SlimdaError(f"no latency table for device {device} at {path}: build it with "
                          f"`slimda-profile --device {device} --bank {run_dir}`")
    return LatencyTable.load(path)


# ---------------------------------------------------------------------------------------- reading rows

def read_rows(path: Path) -> tuple[list[dict[str, str]], bool]:
    """Rows of a table file, tolerating a build killed mid-write: a last line without its newline is
    dropped. Returns (rows, whether the file was intact)."""
    if not path.is_file():
        return [], True
    text = path.read_text()
    intact = not text or text.endswith("\n")
    if not intact:
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is not None and list(reader.fieldnames) != list(TABLE_COLUMNS):
        raise SlimdaError(f"{path} is not a latency table of this slimda version (its columns differ): "
                          "move it away or pass another --out")
    rows = [r for r in reader if None not in r.values() and r.get("entry_kind") in ENTRY_KINDS]
    return rows, intact


class _RowLog:
    """Append rows to the table file, flushed and synced one by one, so an interrupted build keeps them."""

    def __init__(self, path: Path, rows: Sequence[Mapping[str, object]]) -> None:
        from slimda.tables import write_csv_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        if rows:
            write_csv_atomic(path, [normalise_row(r) for r in rows])
        else:
            path.write_text(",".join(TABLE_COLUMNS) + "\n")
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")

    def append(self, row: Mapping[str, object]) -> None:
        self.writer.writerow(normalise_row(row))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# --------------------------------------------------------------------------------------------- building

@dataclass(frozen=True)
class Entry:
    """One thing to time: a block key, or a whole network (``uniform``/``whole``) in round ``round``."""

    kind: str
    key: str
    config: WidthConfig
    slot: BlockSlot | None = None
    round: int = 0


def _bank_for(bank_or_space: ModelBank | WidthSpace, in_channels: int | None, num_classes: int) -> ModelBank:
    if isinstance(bank_or_space, ModelBank):
        return bank_or_space
    space = bank_or_space
    channels = in_channels or default_in_channels(space.arch)
    return ModelBank(space.arch, num_classes, channels, space.ratios, space.multiple).eval()


def default_in_channels(arch: str) -> int:
    """Grey images for the digits CNN, RGB for the ImageNet backbones."""
    return 1 if arch == "digits-cnn" else 3


def fit_set(space: WidthSpace, fit_configs: int, seed: int) -> tuple[list[WidthConfig], list[WidthConfig]]:
    """(uniform-width configurations, ``fit_configs`` random ones seeded by ``seed``)."""
    uniform = list({c.id: c for c in (space.uniform(r) for r in space.ratios)}.values())
    return uniform, space.sample_many(fit_configs, seed + FIT_SEED_OFFSET, exclude=uniform)


def plan_entries(space: WidthSpace, plan: NetPlan, fit_configs: int, seed: int, enumerate_limit: int,
                 whole_rounds: int = 1) -> list[Entry]:
    """What a build times, in order. One segment per uniform / fit-set network: its new block keys, a
    share of the remaining keys of the small slots, the network itself, and the later rounds of networks
    a fraction of the build earlier or later. Blocks and wholes are thus timed under the same machine load
    and each network's rounds lie far apart (their median evens out drift on a shared machine)."""
    uniform, fit = fit_set(space, fit_configs, seed)
    wholes = [("uniform", c) for c in uniform] + [("whole", c) for c in fit]
    seen: set[str] = set()

    def new_blocks(pairs: Iterable[tuple[BlockSlot, WidthConfig]]) -> list[Entry]:
        out = []
        for slot, config in pairs:
            key = slot.key(config.as_dict())
            if key not in seen:
                seen.add(key)
                out.append(Entry("block", key, config, slot))
        return out

    own = [new_blocks((slot, config) for slot in plan.slots) for _, config in wholes]
    extra = new_blocks((slot, config) for slot in plan.slots if slot.possible_keys(space) <= enumerate_limit
                       for config in _slot_configs(space, slot))
    entries: list[Entry] = []
    n = max(len(wholes), 1)
    for i, (kind, config) in enumerate(wholes):
        entries += own[i] + extra[i * len(extra) // n:(i + 1) * len(extra) // n]
        entries.append(Entry(kind, config.id, config))
        for r in range(1, whole_rounds):
            j = (i + r * n // whole_rounds) % n
            entries.append(Entry(wholes[j][0], wholes[j][1].id, wholes[j][1], round=r))
    return entries


def _slot_configs(space: WidthSpace, slot: BlockSlot) -> list[WidthConfig]:
    """One configuration per combination of the slot's site widths (other sites at full width)."""
    sites = list(dict.fromkeys(c.site for c in (slot.cin, slot.mid, slot.cout) if c.site))
    base = space.largest().as_dict()
    combos: list[dict[str, int]] = [{}]
    for site in sites:
        combos = [{**c, site: v} for c in combos for v in space.choices[site]]
    return [space.config({**base, **c}) for c in combos]


def _weights_mb(module: nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) * 4 / 1e6, 6)


class _Exporter:
    """Exports entries to ONNX in a scratch folder; whole networks stay exported until their last round."""

    def __init__(self, bank: ModelBank, plan: NetPlan, dev: DeviceProfile, folder: Path) -> None:
        self.bank, self.plan, self.dev, self.folder = bank, plan, dev, folder
        self.done: dict[tuple[str, str], tuple[Path, float]] = {}

    def export(self, entry: Entry) -> tuple[Path, float]:
        """(ONNX path, weight MB); raises ``SlimdaError`` when the export fails."""
        from slimda.export.onnx_export import export_onnx

        if (entry.kind, entry.key) in self.done:
            return self.done[(entry.kind, entry.key)]
        slug = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in entry.key)[:150]
        path = self.folder / f"{len(self.done):05d}-{entry.kind}-{slug}.onnx"
        if entry.slot is not None:
            module = static_block(self.bank, self.plan, entry.slot, entry.config)
            shape = block_input_shape(self.plan, entry.slot, entry.config)
        else:
            module, shape = self.bank.extract(entry.config, head=HEAD), self.plan.input_shape
        export_onnx(module, path, shape, self.dev.default_opset)
        self.done[(entry.kind, entry.key)] = (path, _weights_mb(module))
        return self.done[(entry.kind, entry.key)]

    def release(self, entry: Entry) -> None:
        path, _ = self.done.pop((entry.kind, entry.key), (None, 0.0))
        if path is not None:
            path.unlink(missing_ok=True)


def _time_entry(entry: Entry, exporter: _Exporter, options: MeasureOptions, last_use: bool) -> dict[str, object]:
    """The entry's row: measured, or a failure row when its export or measurement fails."""
    dev = exporter.dev
    try:
        path, mb = exporter.export(entry)
    except SlimdaError as err:
        return {**measurement.failure_row(dev, err, runtime=dev.runtime, options=options),
                **_meta(entry, exporter.plan, dev)}
    try:
        row = measurement.measure_row(path, dev, options)
    finally:
        if last_use:
            exporter.release(entry)
    return {**row, **_meta(entry, exporter.plan, dev), "weights_mb": mb}


def _meta(entry: Entry, plan: NetPlan, dev: DeviceProfile) -> dict[str, object]:
    return {"entry_kind": entry.kind, "entry_key": entry.key,
            "config_id": "" if entry.kind == "block" else entry.config.id,
            "arch": plan.arch, "net_input_shape": plan.input_text, "num_classes": plan.num_classes,
            "opset": dev.default_opset}


def _check_same_table(rows: Sequence[Mapping[str, str]], plan: NetPlan, dev: DeviceProfile,
                      options: MeasureOptions, path: Path) -> None:
    threads = options.threads_for(dev)
    wanted = {"device": dev.name, "arch": plan.arch, "net_input_shape": plan.input_text,
              "num_classes": str(plan.num_classes), "opset": str(dev.default_opset),
              "threads": "" if threads is None else str(threads)}
    for row in rows:
        found = {k: str(row[k]) for k in wanted}
        if not (_ok(row) and row["entry_kind"] != "correction"):
            found["threads"] = wanted["threads"]  # failure rows record the requested threads, or none
        if found != wanted:
            raise SlimdaError(f"{path} holds a latency table for other settings ({found}, wanted {wanted}): "
                              "pass another --out, or delete the file to rebuild it")


def build_table(
    bank_or_space: ModelBank | WidthSpace,
    device: str | DeviceProfile,
    options: MeasureOptions | None,
    out_csv: str | os.PathLike,
    *,
    resolution: tuple[int, int] | None = None,
    in_channels: int | None = None,
    num_classes: int = 10,
    fit_configs: int = 40,
    whole_rounds: int = 3,
    seed: int = 0,
    enumerate_limit: int = 64,
    correction_terms: str = "auto",
    retry_failed: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Time what the table needs (resuming from ``out_csv``), fit the correction, write ``out_csv``.

    The input shape is ``options.batch`` × the bank's channels × ``resolution`` (else ``options.resolution``,
    else the backbone's default size). ``fit_configs`` random sub-networks (seeded by ``seed``) and the
    uniform widths are timed whole, ``whole_rounds`` times each, for the correction. Entries already in
    ``out_csv`` are skipped (failed ones too, unless ``retry_failed``); every new row is appended and
    flushed at once, so an interrupted build loses at most the entry it was timing.
    """
    dev = get_device(device)
    opts = options or MeasureOptions()
    bank = _bank_for(bank_or_space, in_channels, num_classes)
    space = bank.space if isinstance(bank_or_space, ModelBank) else bank_or_space
    size = resolution or opts.resolution or (bank.backbone.default_input_size,) * 2
    plan = plan_for(bank, (int(size[0]), int(size[1])), opts.batch)
    path = Path(out_csv)
    say = log or (lambda text: print(text, file=sys.stderr))

    rows, intact = read_rows(path)
    _check_same_table(rows, plan, dev, opts, path)
    rows = [r for r in rows if r["entry_kind"] != "correction" and (not retry_failed or r["status"] != "failed")]
    counts = Counter((r["entry_kind"], r["entry_key"]) for r in rows)
    entries = plan_entries(space, plan, fit_configs, seed, enumerate_limit, whole_rounds)
    todo = [e for e in entries if counts[(e.kind, e.key)] <= e.round]
    if rows:
        say(f"resuming {path}: {len(entries) - len(todo)} of {len(entries)} entries already measured"
            + ("" if intact else " (dropped a half-written last line)"))
    last_use = {(e.kind, e.key): i for i, e in enumerate(todo)}
    measure_opts = replace(opts, resolution=None)  # every exported model has fixed shapes
    started = time.perf_counter()
    log_file = _RowLog(path, rows)
    all_rows: list[dict[str, object]] = list(rows)
    try:
        with tempfile.TemporaryDirectory(prefix="slimda-lut-") as tmp, one_torch_thread(), \
                progress_bar(len(todo), "latency table", "entry", progress) as bar:
            exporter = _Exporter(bank, plan, dev, Path(tmp))
            for i, entry in enumerate(todo):
                bar.set_postfix_str(entry.key[:48], refresh=False)
                row = _time_entry(entry, exporter, measure_opts, i == last_use[(entry.kind, entry.key)])
                log_file.append(row)
                all_rows.append(row)
                bar.update(1)
    finally:
        log_file.close()
    table = LatencyTable(all_rows, plan)
    table.correction = table.fit_correction(correction_terms)
    table.rows.append(normalise_row(_correction_row(table, all_rows, plan, dev)))
    table.save(path)
    c = table.correction
    failed = sum(1 for r in all_rows if r["status"] == "failed")
    say(f"latency table {path}: {len(todo)} entries timed in {time.perf_counter() - started:.1f} s "
        f"({len(entries) - len(todo)} reused, {failed} failed); {len(table.block_ms)} block keys; correction "
        f"{c.terms}: a={c.a:.4f} b={c.b:.4f} ms c={c.c:.5f} ms/MB over {c.points} networks "
        f"(leave-one-out error {100 * c.loo_error:.1f} %)")
    return table


def _correction_row(table: LatencyTable, rows: Sequence[Mapping[str, object]], plan: NetPlan,
                    dev: DeviceProfile) -> dict[str, object]:
    c = table.correction
    template = next((r for r in rows if _ok(r)), {})
    return {**{k: template.get(k, "") for k in ("device", "runtime", "runtime_version", "precision", "threads",
                                                 "batch", "host")},
            "device": dev.name, "entry_kind": "correction", "entry_key": c.terms, "coef_a": round(c.a, 6),
            "coef_b_ms": round(c.b, 6), "coef_c_ms_per_mb": round(c.c, 6), "status": "ok",
            "measured_at": measurement.now_iso(), "arch": plan.arch, "net_input_shape": plan.input_text,
            "num_classes": plan.num_classes, "opset": dev.default_opset,
            "notes": f"relative least squares over {c.points} measured whole networks (median of their rounds); "
                     f"leave-one-out mean |error| {100 * c.loo_error:.2f} %"}


# ------------------------------------------------------------------------------------------- validation

@dataclass(frozen=True)
class ValidationReport:
    """Predicted vs measured latency of held-out random configurations (measured: median of rounds)."""

    rows: list[dict[str, object]]
    within_10: float
    rmse_ms: float
    spearman: float
    count: int
    with_fallback: int
    repeatable: float  # share of networks whose every round lies within ±10 % of their median: the noise floor
    drift: float  # the uniform-width networks now / in the table, median: how far the device moved since

    def text(self) -> str:
        return (f"{self.count} held-out configurations: {100 * self.within_10:.1f} % within ±10 %, "
                f"RMSE {self.rmse_ms:.4f} ms, Spearman ρ {self.spearman:.3f}; {self.with_fallback} used the "
                f"per-slot regression for unseen blocks; measurement repeatability {100 * self.repeatable:.0f} % "
                f"(rounds within ±10 % of their median); uniform-width networks now {100 * (self.drift - 1):+.1f} % "
                "against the table")


def accuracy(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float, float]:
    """(share within ±10 % of measured, RMSE in ms, Spearman ρ)."""
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if len(p) == 0:
        return float("nan"), float("nan"), float("nan")
    within = float(np.mean(np.abs(p - m) <= 0.1 * m))
    rmse = float(np.sqrt(np.mean((p - m) ** 2)))
    rho = float(spearmanr(p, m).statistic) if len(p) > 2 else float("nan")
    return within, rmse, rho


def validation_configs(space: WidthSpace, table: LatencyTable, count: int, seed: int = 0) -> list[WidthConfig]:
    """``count`` random configurations outside the table's uniform and fit-set networks."""
    exclude = [table.config(i) for i in table.uniform_ids | table.fit_ids]
    return space.sample_many(count, seed + VALIDATION_SEED_OFFSET, exclude=exclude)


def measure_configs(bank: ModelBank, plan: NetPlan, configs: Sequence[WidthConfig], device: str | DeviceProfile,
                    options: MeasureOptions | None, rounds: int = 3,
                    progress: bool | None = None) -> dict[str, list[dict[str, object]]]:
    """Time whole networks end to end in ``rounds`` interleaved rounds: {config id: its rows}."""
    dev = get_device(device)
    opts = replace(options or MeasureOptions(), resolution=None)
    out: dict[str, list[dict[str, object]]] = {c.id: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="slimda-lut-val-") as tmp, \
            progress_bar(rounds * len(configs), "validation", "run", progress) as bar, one_torch_thread():
        exporter = _Exporter(bank, plan, dev, Path(tmp))
        for r in range(rounds):
            for config in configs:
                out[config.id].append(_time_entry(Entry("whole", config.id, config, round=r), exporter, opts,
                                                  last_use=r == rounds - 1))
                bar.update(1)
    return out


def validate_table(table: LatencyTable, bank_or_space: ModelBank | WidthSpace, device: str | DeviceProfile,
                   options: MeasureOptions | None, count: int, out_csv: str | os.PathLike | None = None, *,
                   seed: int = 0, rounds: int = 3, progress: bool | None = None) -> ValidationReport:
    """Time ``count`` held-out configurations end to end (median of ``rounds``) against the predictions.

    The uniform-width networks are timed again in the same rounds: ``drift`` says how much faster or slower
    the device runs now than when the table was built (a shared machine's load, thermal state, ...)."""
    from slimda.tables import write_csv_atomic

    bank = _bank_for(bank_or_space, table.input_shape[1], table.num_classes)
    space = bank.space if isinstance(bank_or_space, ModelBank) else bank_or_space
    configs = validation_configs(space, table, count, seed)
    anchors = [table.config(i) for i in sorted(table.uniform_ids) if i in table.whole_ms]
    measured = measure_configs(bank, table.plan, configs + anchors, device, options, rounds, progress)
    now = [np.median([float(r["latency_ms_p50"]) for r in measured[a.id] if _ok(r)]) / table.whole_ms[a.id]
           for a in anchors if any(_ok(r) for r in measured[a.id])]
    rows: list[dict[str, object]] = []
    repeatable = []
    for config in configs:
        pred = table.explain(config)
        values = [float(r["latency_ms_p50"]) for r in measured[config.id] if _ok(r)]  # type: ignore[arg-type]
        errors = [str(r["error"]) for r in measured[config.id] if r.get("status") != "ok"]
        ms = float(np.median(values)) if values else None
        if values:
            repeatable.append(all(abs(v / ms - 1) <= 0.1 for v in values))
        rows.append({"config_id": config.id, "predicted_ms": round(pred.latency_ms, 6),
                     "measured_ms": "" if ms is None else round(ms, 6),
                     "error_pct": "" if ms is None else round(100 * (pred.latency_ms / ms - 1), 2),
                     "fallback_blocks": pred.fallback_blocks, "source": pred.source, "rounds": len(values),
                     "round_ms": " ".join(f"{v:.4f}" for v in values),
                     "status": "ok" if values else "failed", "error": errors[0] if errors else ""})
    good = [r for r in rows if r["status"] == "ok"]
    within, rmse, rho = accuracy([float(r["predicted_ms"]) for r in good],  # type: ignore[arg-type]
                                 [float(r["measured_ms"]) for r in good])  # type: ignore[arg-type]
    if out_csv is not None and rows:
        write_csv_atomic(out_csv, rows)
    return ValidationReport(rows, within, rmse, rho, len(good), sum(1 for r in good if r["fallback_blocks"]),
                            float(np.mean(repeatable)) if repeatable else float("nan"),
                            float(np.median(now)) if now else float("nan"))


# -------------------------------------------------------------------------------------------------- CLI

def run_bank_profile(args) -> int:
    """``slimda-profile --device D --bank RUN`` (or ``--arch NAME --out FILE``): build, then validate."""
    from slimda.bank import load_bank
    from slimda.commands.profile import check_jetson_host, options_from_args, parse_resolution

    dev = get_device(args.device)
    options = options_from_args(args)
    check_jetson_host(dev, options)
    arch = getattr(args, "arch", None)
    if args.bank:
        bank, metadata = load_bank(args.bank)
        run_dir = Path(args.bank) if Path(args.bank).is_dir() else Path(args.bank).parent
        size = (metadata.get("preprocessing") or {}).get("size")
        resolution = parse_resolution(args.resolution) or (tuple(int(s) for s in size) if size else None)
        out = Path(args.out) if args.out else table_path(run_dir, dev.name)
    elif arch:
        if not args.out:
            raise ConfigError("--arch profiles an untrained bank: give --out FILE for its latency table")
        channels = getattr(args, "channels", None) or default_in_channels(arch)
        bank = ModelBank(arch, getattr(args, "classes", 10), channels).eval()
        resolution = parse_resolution(args.resolution)
        out = Path(args.out)
    else:
        raise ConfigError("give --bank RUN (a run directory or bank.pt) or --arch NAME with --out FILE")
    seed = getattr(args, "seed", 0)
    table = build_table(bank, dev, options, out, resolution=resolution, seed=seed,
                        fit_configs=getattr(args, "fit_configs", 40),
                        retry_failed=getattr(args, "retry_failed", False))
    print(", ".join(f"{k}={v}" for k, v in table.summary().items()))
    print(f"wrote {out}")
    if args.validate:
        val_out = out.with_name(f"{out.stem}-validation.csv")
        report = validate_table(table, bank, dev, options, args.validate, val_out, seed=seed)
        print(report.text())
        print(f"wrote {val_out}")
    return 0
