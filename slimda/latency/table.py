"""Latency lookup tables: predict any width configuration's latency on a device from block measurements.

A table is built for one (bank width space, device, input resolution, batch) and is one flat CSV:

- ``block`` rows: one top-level block of the backbone (its ``timing_blocks()``, plus the classifier head)
  exported alone at fixed widths and timed. The key names the block by its absolute shapes,
  ``<arch>.<class>(<ops>)|in=C|mid=C|out=C|s=S|hw=HxW`` (input channels, inner width, output channels,
  spatial stride, input size), so blocks at different positions with the same shapes share one entry.
- ``uniform`` rows: whole networks at the uniform widths of the space (returned as measured).
- ``whole`` rows: whole random sub-networks (the *fit set*), timed end to end.
- ``correction`` row: ``latency ≈ a·Σ blocks + b`` (+ ``c·weight MB``, + ``d·max(0, weight MB − knee)``,
  + ``Σ_s e_s·block_s``, where those terms lower the leave-one-out error), relative least squares over the
  uniform and fit-set networks, each with the blocks it would have had as a held-out network
  (``held_out_blocks``). Timing a block alone adds a runtime call and layout conversions and loses
  cross-block fusion (constant or proportional costs: ``a``, ``b``; per slot where one block's differ from
  the others': ``e_s``, shrunk towards 0); it also keeps the block's weights hot in the caches, which a
  whole network larger than the caches cannot (a cost that follows the weight bytes: ``c``; its slope
  changes by ``d``, either way, where the weights outgrow a cache level).

The space is far too large to time every block key (digits-cnn: ~470k configurations, resnet18 ~1e10), so
a build times every key of the uniform and fit-set networks and every key of the block *slots* with few
possible keys (``enumerate_limit``); any other key is predicted by a per-group regression (nn-Meter-style
kernel predictor): relative least squares of the measured keys of its group (same block kind, stride and
input size) on the terms of a conv block's FLOPs, ``1, in, mid, out, in·mid, mid², mid·out, in·out``, of the
channel counts rounded up to the multiples the group's kernels step in (slimda.latency.fit.GroupModel).
``Prediction.fallback_blocks`` counts the blocks of a prediction that came from it.

Every entry is timed *paired* with a reference network (the uniform width nearest 0.5×) wherever slimda
drives the device's runtime (here, or on an ssh host through its worker): the two alternate in ~20 ms
chunks and the row records their ratio (``vs_reference``) beside the raw statistics. A shared host or a
CPU with unlocked clocks changes speed by tens of percent within seconds; the ratio does not see it. The
table's latency of a paired entry is ``vs_reference`` × the reference's median over the whole build
(``reference_ms``): the entry's latency at the device's typical speed. A phone through adb and a Jetson
through trtexec are timed unpaired (the raw median).
Whole networks are also timed in several rounds spread over the build and the table keeps their median.

Builds resume: each row is appended and flushed as soon as it is measured and entries already in the file
are skipped; an entry that fails on the device becomes a ``status=failed`` row with the error and is left
out of every fit and prediction.

Modules: slimda.latency.plan (block slots and keys), slimda.latency.fit (the regression and the correction),
slimda.latency.noise (how well a device repeats its timings), this one (the table and its predictions),
slimda.latency.build (building), slimda.latency.validate (validation).
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from slimda.errors import ConfigError, SlimdaError
from slimda.latency.fit import Correction, GroupModel, fit_correction
from slimda.latency.noise import RoundNoise
from slimda.latency.plan import BlockSlot, NetPlan, key_channels, key_group, plan_for, plan_from_description
from slimda.model.bank import ModelBank
from slimda.model.space import WidthConfig, parse_config_id
from slimda.profilers.devices import INT8
from slimda.profilers.measurement import PAIRED_COLUMNS, ROW_COLUMNS

# What a row of a table is (see the module's docstring), as its ``entry_kind`` column writes it
EntryKind = Literal["block", "uniform", "whole", "correction"]
BLOCK: EntryKind = "block"
UNIFORM: EntryKind = "uniform"
WHOLE: EntryKind = "whole"
CORRECTION: EntryKind = "correction"
ENTRY_KINDS: tuple[EntryKind, ...] = get_args(EntryKind)
TABLE_COLUMNS: tuple[str, ...] = (
    "entry_kind", "entry_key", "config_id", *ROW_COLUMNS, *PAIRED_COLUMNS, "reference_id", "weights_mb",
    "arch", "net_input_shape", "num_classes", "opset", "coef_a", "coef_b_ms", "coef_c_ms_per_mb",
    "coef_d_ms_per_mb_spilled", "spill_knee_mb", "coef_slots", "table_precision",
)
# columns added since the first table format; a table that lacks some of them still loads
LATER_COLUMNS = (*PAIRED_COLUMNS, "reference_id", "coef_d_ms_per_mb_spilled", "spill_knee_mb", "coef_slots",
                 "table_precision")

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


def is_ok_row(row: Mapping[str, object]) -> bool:
    return row.get("status") == "ok" and _float(row.get("latency_ms_p50")) is not None


def normalise_row(row: Mapping[str, object]) -> dict[str, object]:
    """A row with exactly the table's columns, in order ("" for missing values)."""
    return {c: ("" if row.get(c) is None else row.get(c)) for c in TABLE_COLUMNS}


def reference_ms(rows: Iterable[Mapping[str, object]]) -> float | None:
    """The reference network's median latency over every paired row (None when no row is paired)."""
    paired = (r for r in rows if is_ok_row(r) and _float(r.get("vs_reference")) is not None)
    values = [v for v in (_float(r.get("reference_ms")) for r in paired) if v is not None]
    return float(np.median(values)) if values else None


def table_precision(rows: Iterable[Mapping[str, object]]) -> str:
    """The precision a table was built in: what its rows record (``table_precision``: the precision the build
    asked for). A table from before that column says it by what its rows were timed in: int8 where any row
    ran a quantized model, else the first of the float precisions its rows ran in."""
    stored = {str(r["table_precision"]) for r in rows if r.get("table_precision")}
    if len(stored) > 1:
        raise SlimdaError(f"latency table mixes rows built in {', '.join(sorted(stored))}: a table serves one "
                          "precision; rebuild it")
    if stored:
        return stored.pop()
    timed = {str(r["precision"]) for r in rows if is_ok_row(r) and r["entry_kind"] != CORRECTION}
    return INT8 if INT8 in timed else (min(timed) if timed else "")


def row_latency(row: Mapping[str, object], reference: float | None) -> float:
    """A row's latency in ms: ``vs_reference`` × the table's reference latency when the row is paired, else its
    raw median."""
    ratio = _float(row.get("vs_reference"))
    if ratio is not None and reference is not None:
        return ratio * reference
    return float(row["latency_ms_p50"])  # type: ignore[arg-type]


def _rounds(rows: Iterable[Mapping[str, object]], kinds: tuple[str, ...], field: str,
            reference: float | None) -> dict[str, list[float]]:
    """Every ok measurement of each entry (whole networks are timed in several rounds)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["entry_kind"] in kinds and is_ok_row(row):
            values.setdefault(str(row[field]), []).append(row_latency(row, reference))
    return values


def _medians(rounds: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Median latency per entry over its rounds."""
    return {k: float(np.median(v)) for k, v in rounds.items()}


class LatencyTable:
    """A device's latency lookup table for one bank width space: ``predict(config) -> ms``."""

    def __init__(self, rows: Iterable[Mapping[str, object]], plan: NetPlan | None = None,
                 bank: ModelBank | None = None) -> None:
        """``plan``: the table's block plan; else traced from ``bank`` (the bank the caller holds) when it is the
        table's architecture and classes, else from a bank built for the table's description."""
        self.rows = [normalise_row(r) for r in rows]
        meta = next((r for r in self.rows if r["arch"] and r["net_input_shape"]), None)
        if meta is None:
            raise SlimdaError("latency table has no rows naming its architecture and input shape")
        self.arch = str(meta["arch"])
        self.device = str(meta["device"])
        self.input_shape = tuple(int(d) for d in str(meta["net_input_shape"]).split("x"))
        self.num_classes = int(meta["num_classes"])  # type: ignore[arg-type]
        if plan is None and bank is not None and (bank.arch, bank.num_classes, bank.in_channels) == (
                self.arch, self.num_classes, self.input_shape[1]):
            plan = plan_for(bank, self.input_shape[2:], self.input_shape[0])  # type: ignore[arg-type]
        self.plan = plan or plan_from_description(self.arch, self.input_shape,  # type: ignore[arg-type]
                                                  self.num_classes)
        self.reference_ms = reference_ms(self.rows)
        self.reference_id = next((str(r["reference_id"]) for r in self.rows if r["reference_id"]), "")
        self.precision = table_precision(self.rows)
        self.block_ms = _medians(_rounds(self.rows, (BLOCK,), "entry_key", self.reference_ms))
        whole_rounds = _rounds(self.rows, (UNIFORM, WHOLE), "config_id", self.reference_ms)
        self.whole_ms = _medians(whole_rounds)
        self.noise = RoundNoise.of(whole_rounds.values())
        self.uniform_ids = {str(r["config_id"]) for r in self.rows if r["entry_kind"] == UNIFORM}
        self.fit_ids = {str(r["config_id"]) for r in self.rows if r["entry_kind"] == WHOLE}
        self._groups: dict[str, GroupModel | None] = {}
        self._memo: dict[str, tuple[float, float, bool]] = {}
        self._complete: dict[str, bool] = {}  # slot name: every key it can take was timed
        self._choices: dict[str, set[int]] | None = None  # site: its widths (from the uniform networks)
        stored = [r for r in self.rows if r["entry_kind"] == CORRECTION and r["status"] == "ok"]
        slots = tuple(_float(v) for v in str(stored[-1]["coef_slots"] or "").split()) if stored else ()
        if stored and None not in slots and len(slots) in (0, len(self.plan.slots)):
            r = stored[-1]
            self.correction = Correction(float(r["coef_a"]), float(r["coef_b_ms"]),  # type: ignore[arg-type]
                                         _float(r["coef_c_ms_per_mb"]) or 0.0, str(r["entry_key"]),
                                         d=_float(r["coef_d_ms_per_mb_spilled"]) or 0.0,
                                         knee_mb=_float(r["spill_knee_mb"]) or 0.0,
                                         slot_coef=slots)  # type: ignore[arg-type]
        else:  # none stored, or stored for another plan's slots (or unreadable)
            self.correction = self.fit_correction()

    # -- persistence
    @classmethod
    def load(cls, path: str | os.PathLike, bank: ModelBank | None = None) -> LatencyTable:
        """The table in ``path``; ``bank``: the caller's bank, whose plan it uses (see ``__init__``)."""
        rows, _complete = read_rows(Path(path))
        if not rows:
            raise SlimdaError(f"latency table {path} has no rows")
        return cls(rows, bank=bank)

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

    def _group_points(self, group: str, left_out: set[str] | frozenset[str] = frozenset()) -> list[tuple]:
        """(channels, ms) of the group's timed keys, but ``left_out``."""
        return [(key_channels(k), v) for k, v in self.block_ms.items() if key_group(k) == group and k not in left_out]

    def _group_model(self, group: str) -> GroupModel | None:
        if group not in self._groups:
            points = self._group_points(group)
            self._groups[group] = GroupModel(*zip(*points)) if points else None  # type: ignore[call-arg]
        return self._groups[group]

    def blocks(self, config: WidthConfig) -> list[tuple[float, float, bool]]:
        """``block_entry`` of every slot of ``config``, in plan order."""
        if config.arch != self.arch:
            raise ConfigError(f"configuration is for {config.arch!r}; this latency table is for {self.arch!r}")
        widths = config.as_dict()
        return [self.block_entry(slot, widths) for slot in self.plan.slots]

    def block_sum(self, config: WidthConfig) -> tuple[float, float, int]:
        """(Σ block latencies in ms, Σ weight MB, number of blocks the regression predicted) of ``config``."""
        return _totals(self.blocks(config))

    def explain(self, config: WidthConfig) -> Prediction:
        entries = self.blocks(config)
        total, mb, fallback = _totals(entries)
        if config.id in self.whole_ms:
            source = UNIFORM if config.id in self.uniform_ids else WHOLE
            return Prediction(config.id, self.whole_ms[config.id], source, total, mb, fallback)
        slots = [e[0] for e in entries] if self.correction.slot_coef else []
        return Prediction(config.id, max(self.correction(total, mb, slots), 1e-6), "blocks", total, mb, fallback)

    def predict(self, config: WidthConfig) -> float:
        """Median latency of ``config`` in ms: as measured for the uniform widths, else the corrected Σ."""
        return self.explain(config).latency_ms

    def fit_correction(self, terms: str = "auto") -> Correction:
        """Fit the correction on the measured whole networks (uniform and fit set), each network's blocks
        taken as if it were held out (``held_out_blocks``): the correction serves networks nobody timed,
        whose sums carry the group regression's error, and its form is chosen by an error that must see it."""
        held_out = self.held_out_blocks()
        ids = [i for i in sorted(self.whole_ms) if i in held_out]
        slots = [held_out[i][0] for i in ids]
        return fit_correction([sum(v) for v in slots], [held_out[i][1] for i in ids],
                              [self.whole_ms[i] for i in ids], terms, slots)

    def held_out_blocks(self) -> dict[str, tuple[list[float], float]]:
        """{whole network: (its block latencies in slot order, Σ weight MB)} with each of its *own* keys
        (timed for no other whole network, in a slot whose keys were not all timed) predicted by its group's
        regression fitted without them: what it would have been had the build not timed them. Without this,
        every fit network's sum is exact (a build times all their keys), so the correction's leave-one-out
        error could not see the regression's error that every held-out prediction carries, and picked forms
        on data that had none (a 3-channel digits-cnn table: 100 % of fit networks within ±10 %, 87 % of
        held-out ones)."""
        configs = {}
        for config_id in self.whole_ms:
            try:
                configs[config_id] = self.config(config_id)
            except SlimdaError:
                continue
        keys = {i: self.plan.keys(c) for i, c in configs.items()}
        shared = Counter(k for ks in keys.values() for k in set(ks))
        out = {}
        for config_id, config in configs.items():
            try:
                entries = self.blocks(config)
            except SlimdaError:
                continue
            own = {k for slot, k in zip(self.plan.slots, keys[config_id])
                   if shared[k] == 1 and k in self.block_ms and not self._all_keys_timed(slot)}
            out[config_id] = ([self._predict_without(slot, config, own) if key in own else ms
                               for slot, key, (ms, _, _) in zip(self.plan.slots, keys[config_id], entries)],
                              sum(e[1] for e in entries))
        return out

    def _predict_without(self, slot: BlockSlot, config: WidthConfig, left_out: set[str]) -> float:
        full = self._group_model(slot.group)
        points = self._group_points(slot.group, left_out)
        if full is None or len(points) < 2:
            return self.block_ms[slot.key(config.as_dict())]
        return GroupModel(*zip(*points), pads=full.pads).predict(slot.channels(config.as_dict()))  # type: ignore[misc]

    def _all_keys_timed(self, slot: BlockSlot) -> bool:
        """Whether every key the slot can take is in the table (a build enumerates the slots with few)."""
        if slot.name not in self._complete:
            if self._choices is None:
                self._choices = {}
                for config_id in self.uniform_ids:  # the uniform widths hold every choice of every site
                    for site, width in self.config(config_id).as_dict().items():
                        self._choices.setdefault(site, set()).add(width)
            sites = sorted({c.site for c in (slot.cin, slot.mid, slot.cout) if c.site})
            options = [sorted(self._choices.get(site, ())) for site in sites]
            self._complete[slot.name] = math.prod(map(len, options)) <= 4096 and all(
                slot.key(dict(zip(sites, combo))) in self.block_ms for combo in itertools.product(*options))
        return self._complete[slot.name]

    def config(self, config_id: str) -> WidthConfig:
        """The configuration with this id (the table knows its sites, not its ratio grid)."""
        return parse_config_id(self.arch, self.plan.sites, config_id)

    def summary(self) -> dict[str, object]:
        c = self.correction
        return {"arch": self.arch, "device": self.device, "input": "x".join(map(str, self.input_shape)),
                "block_entries": len(self.block_ms), "uniform_entries": len(self.uniform_ids & set(self.whole_ms)),
                "whole_entries": len(self.fit_ids & set(self.whole_ms)),
                "failed_rows": sum(1 for r in self.rows if r["status"] == "failed"),
                "correction": c.terms, "coef_a": round(c.a, 4), "coef_b_ms": round(c.b, 4),
                "coef_c_ms_per_mb": round(c.c, 5), "coef_d_ms_per_mb_spilled": round(c.d, 5),
                "spill_knee_mb": round(c.knee_mb, 3), **self.regression_summary(),
                "reference": self.reference_id or "none (unpaired)",
                "reference_ms": "" if self.reference_ms is None else round(self.reference_ms, 4),
                "repeatable_pct": round(100 * self.noise.repeatable, 1) if self.noise.networks else "",
                "round_spread_pct": round(100 * self.noise.spread, 1) if self.noise.networks else ""}

    def regression_summary(self) -> dict[str, object]:
        """The block groups whose unseen keys the regression predicts, and its worst leave-one-out error."""
        groups = {slot.group for slot in self.plan.slots if not self._all_keys_timed(slot)}
        models = [m for m in (self._group_model(g) for g in sorted(groups)) if m is not None]
        errors = [m.loo_error for m in models if not math.isnan(m.loo_error)]
        return {"regressed_groups": len(models),
                "group_loo_error_pct": round(100 * max(errors), 1) if errors else ""}


def _totals(entries: Sequence[tuple[float, float, bool]]) -> tuple[float, float, int]:
    """(Σ ms, Σ weight MB, how many were predicted by the regression) of ``block_entry`` results."""
    return sum(e[0] for e in entries), sum(e[1] for e in entries), sum(e[2] for e in entries)


def table_path(run_dir: str | os.PathLike, device: str, precision: str | None = None) -> Path:
    """Where ``slimda-profile --device DEVICE --bank RUN [--precision P]`` writes the table of a run: one file
    per precision, ``DEVICE.csv`` for the device's default and ``DEVICE-P.csv`` for another."""
    from slimda.profilers.devices import get_device

    default = get_device(device).precision
    suffix = "" if precision in (None, default) else f"-{precision}"
    return Path(run_dir) / "latency" / f"{device}{suffix}.csv"


def load_table(run_dir: str | os.PathLike, device: str, precision: str | None = None,
               bank: ModelBank | None = None) -> LatencyTable:
    """The run's table for ``device`` in ``precision`` (default: the device's), with the plan of ``bank`` (the
    run's bank, which the caller holds: no bank is rebuilt to trace it); a missing one raises ``SlimdaError``
    saying how to build it, and a table timed in another precision is never returned."""
    path = table_path(run_dir, device, precision)
    flag = f" --precision {precision}" if precision else ""
    if not path.is_file():
        raise SlimdaError(f"no latency table for device {device}{' in ' + precision if precision else ''} at "
                          f"{path}: build it with `slimda-profile --device {device} --bank {run_dir}{flag}`")
    table = LatencyTable.load(path, bank)
    if precision is not None and table.precision and table.precision != precision:
        raise SlimdaError(f"{path} was timed in {table.precision}, not {precision}: a table serves only the "
                          f"precision it was built in")
    return table


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
    found = list(reader.fieldnames or [])
    known = [c for c in TABLE_COLUMNS if c in found] == found and set(TABLE_COLUMNS) - set(found) <= set(LATER_COLUMNS)
    if reader.fieldnames is not None and not known:
        raise SlimdaError(f"{path} is not a latency table of this slimda version (its columns differ): "
                          "move it away or pass another --out")
    rows = [r for r in reader if None not in r.values() and r.get("entry_kind") in ENTRY_KINDS]
    return rows, intact
