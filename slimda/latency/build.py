"""Building a latency table on a device (resumable, failures as rows), the banks a table is built for,
and timing a model the way a table was. What the table is: slimda.latency.table; validating it:
slimda.latency.validate.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from slimda.console import one_torch_thread, progress_bar
from slimda.errors import SlimdaError
from slimda.latency.plan import BlockSlot, NetPlan, block_input_shape, plan_for, static_block
from slimda.latency.table import (
    BLOCK,
    CORRECTION,
    TABLE_COLUMNS,
    UNIFORM,
    WHOLE,
    LatencyTable,
    is_ok_row,
    normalise_row,
    read_rows,
    table_path,
)
from slimda.model.bank import ModelBank
from slimda.model.space import WidthConfig, WidthSpace
from slimda.profilers import measurement
from slimda.profilers.base import Artifact
from slimda.profilers.devices import INT8
from slimda.profilers.devices import DeviceProfile, get_device
from slimda.profilers.measurement import MeasureOptions

HEAD = "ca"  # the test-time head whole networks are exported with (a Linear, like Ct and Cs)
FIT_SEED_OFFSET = 0
VALIDATION_SEED_OFFSET = 1_000_003  # held-out configurations never share the fit set's random stream


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


def bank_for(bank_or_space: ModelBank | WidthSpace, in_channels: int | None, num_classes: int) -> ModelBank:
    if isinstance(bank_or_space, ModelBank):
        return bank_or_space
    space = bank_or_space
    channels = in_channels or default_in_channels(space.arch)
    return ModelBank(space.arch, num_classes, channels, space.ratios, space.multiple).eval()


def default_in_channels(arch: str) -> int:
    """Grey images for the digits CNN, RGB for the ImageNet backbones."""
    from slimda.backbones import backbone_cfg

    return backbone_cfg(arch).in_channels


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
    wholes = [(UNIFORM, c) for c in uniform] + [(WHOLE, c) for c in fit]
    seen: set[str] = set()

    def new_blocks(pairs: Iterable[tuple[BlockSlot, WidthConfig]]) -> list[Entry]:
        out = []
        for slot, config in pairs:
            key = slot.key(config.as_dict())
            if key not in seen:
                seen.add(key)
                out.append(Entry(BLOCK, key, config, slot))
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


def reference_config(space: WidthSpace) -> WidthConfig:
    """The network every entry is timed against: the uniform width nearest 0.5× (a mid-sized network of the
    same architecture, so it feels the machine's slowdowns as the entries do)."""
    return space.uniform(min(space.ratios, key=lambda r: (abs(r - 0.5), r)))


class Exporter:
    """Exports entries to ONNX in a scratch folder; whole networks stay exported until their last round.
    With a ``reference`` configuration, every entry is timed paired with it (exported once, kept)."""

    def __init__(self, bank: ModelBank, plan: NetPlan, dev: DeviceProfile, folder: Path,
                 reference: WidthConfig | None = None, precision: str | None = None) -> None:
        self.bank, self.plan, self.dev, self.folder = bank, plan, dev, folder
        self.precision = precision or dev.precision  # int8: every entry quantized as the deployed model is
        self.done: dict[tuple[str, str], tuple[Path, float]] = {}
        self.reference_id = reference.id if reference is not None else ""
        self.reference_path = self.export(Entry("reference", reference.id, reference))[0] if reference else None

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
        if self.precision == INT8:
            from slimda.export.quantize import quantize_for_timing

            quantize_for_timing(path, shape, self.dev.int8_activations)
        self.done[(entry.kind, entry.key)] = (path, _weights_mb(module))
        return self.done[(entry.kind, entry.key)]

    def release(self, entry: Entry) -> None:
        path, _ = self.done.pop((entry.kind, entry.key), (None, 0.0))
        if path is not None:
            path.unlink(missing_ok=True)


def time_entry(entry: Entry, exporter: Exporter, options: MeasureOptions, last_use: bool) -> dict[str, object]:
    """The entry's row: measured, or a failure row when its export or measurement fails."""
    dev = exporter.dev
    try:
        path, mb = exporter.export(entry)
    except SlimdaError as err:
        return {**measurement.failure_row(dev, err, runtime=dev.runtime, options=options), **_meta(entry, exporter)}
    try:
        row = measurement.measure_row(path, dev, options, reference=exporter.reference_path)
    finally:
        if last_use:
            exporter.release(entry)
    return {**row, **_meta(entry, exporter), "weights_mb": mb}


def _meta(entry: Entry, exporter: Exporter) -> dict[str, object]:
    plan = exporter.plan
    return {"entry_kind": entry.kind, "entry_key": entry.key,
            "config_id": "" if entry.kind == BLOCK else entry.config.id,
            "arch": plan.arch, "net_input_shape": plan.input_text, "num_classes": plan.num_classes,
            "opset": exporter.dev.default_opset, "reference_id": exporter.reference_id,
            "table_precision": exporter.precision}


def _check_same_table(rows: Sequence[Mapping[str, str]], plan: NetPlan, dev: DeviceProfile,
                      options: MeasureOptions, path: Path, reference_id: str) -> None:
    threads = options.threads_for(dev)
    wanted = {"device": dev.name, "arch": plan.arch, "net_input_shape": plan.input_text,
              "num_classes": str(plan.num_classes), "opset": str(dev.default_opset),
              "threads": "" if threads is None else str(threads), "reference_id": reference_id}
    precision = options.precision_for(dev)
    for row in rows:
        found = {k: str(row[k]) for k in wanted}
        timed = is_ok_row(row) and row["entry_kind"] != CORRECTION
        if not timed:
            found["threads"] = wanted["threads"]  # failure rows record the requested threads, or none
        built_in = row.get("table_precision")  # what the build asked for (older tables: what the row ran in)
        if (built_in and built_in != precision) or (
                not built_in and timed and (row.get("precision") == INT8) != (precision == INT8)):
            raise SlimdaError(f"{path} was built in {built_in or row.get('precision')}, and this build asks for "
                              f"{precision}: a table serves only the precision it was timed in. Pass --out for the "
                              f"{precision} table, or leave --precision out to extend this one")
        if found != wanted:
            if {k for k in wanted if found[k] != wanted[k]} == {"reference_id"}:
                how = (f"paired with {found['reference_id']}" if found["reference_id"]
                       else "unpaired (by an older slimda, or with --unpaired)")
                raise SlimdaError(f"{path} was timed {how}, and paired and unpaired rows do not mix: "
                                  f"{'drop' if found['reference_id'] else 'add'} --unpaired to extend it, or delete "
                                  "the file to rebuild it")
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
    paired: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Time what the table needs (resuming from ``out_csv``), fit the correction, write ``out_csv``.

    The input shape is ``options.batch`` × the bank's channels × ``resolution`` (else ``options.resolution``,
    else the backbone's default size). ``fit_configs`` random sub-networks (seeded by ``seed``) and the
    uniform widths are timed whole, ``whole_rounds`` times each, for the correction. Entries already in
    ``out_csv`` are skipped (failed ones too, unless ``retry_failed``); every new row is appended and
    flushed at once, so an interrupted build loses at most the entry it was timing. With ``paired`` (and a
    device slimda drives, here or over ssh) every entry is timed against ``reference_config(space)``.
    """
    dev = get_device(device)
    opts = options or MeasureOptions()
    bank = bank_for(bank_or_space, in_channels, num_classes)
    space = bank.space if isinstance(bank_or_space, ModelBank) else bank_or_space
    size = resolution or opts.resolution or (bank.backbone.default_input_size,) * 2
    plan = plan_for(bank, (int(size[0]), int(size[1])), opts.batch)
    path = Path(out_csv)
    say = log or (lambda text: print(text, file=sys.stderr))

    reference = reference_config(space) if paired and measurement.can_pair(dev, opts) else None
    rows, intact = read_rows(path)
    _check_same_table(rows, plan, dev, opts, path, reference.id if reference else "")
    rows = [r for r in rows if r["entry_kind"] != CORRECTION and (not retry_failed or r["status"] != "failed")]
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
            exporter = Exporter(bank, plan, dev, Path(tmp), reference, opts.precision_for(dev))
            for i, entry in enumerate(todo):
                bar.set_postfix_str(entry.key[:48], refresh=False)
                row = time_entry(entry, exporter, measure_opts, i == last_use[(entry.kind, entry.key)])
                log_file.append(row)
                all_rows.append(row)
                bar.update(1)
    finally:
        log_file.close()
    if not any(is_ok_row(r) for r in all_rows):
        first = next((r["error"] for r in all_rows if r.get("error")), "no entry was measured")
        raise SlimdaError(f"every entry of the latency table failed on {dev.name} (first error: {first}); the "
                          f"failure rows are in {path}: fix the cause, then run the build again with "
                          "--retry-failed")
    table = LatencyTable(all_rows, plan)
    table.correction = table.fit_correction(correction_terms)
    table.rows.append(normalise_row(_correction_row(table, all_rows, plan, dev)))
    table.save(path)
    c = table.correction
    failed = sum(1 for r in all_rows if r["status"] == "failed")
    say(f"latency table {path}: {len(todo)} entries timed in {time.perf_counter() - started:.1f} s "
        f"({len(entries) - len(todo)} reused, {failed} failed); {len(table.block_ms)} block keys; correction "
        f"{c.terms}: a={c.a:.4f} b={c.b:.4f} ms c={c.c:.5f} ms/MB d={c.d:.5f} ms/MB above {c.knee_mb:.2f} MB "
        f"over {c.points} networks "
        f"(leave-one-out error {100 * c.loo_error:.1f} %); repeatability: {table.noise.text()}")
    if table.noise.noisy:
        say(table.noise.advice(dev.name))
    return table


def _correction_row(table: LatencyTable, rows: Sequence[Mapping[str, object]], plan: NetPlan,
                    dev: DeviceProfile) -> dict[str, object]:
    c = table.correction
    template = next((r for r in rows if is_ok_row(r)), {})
    return {**{k: template.get(k, "") for k in ("device", "runtime", "runtime_version", "precision", "threads",
                                                 "batch", "host")},
            "device": dev.name, "entry_kind": CORRECTION, "entry_key": c.terms,
            "table_precision": table.precision, "coef_a": round(c.a, 6),
            "coef_b_ms": round(c.b, 6), "coef_c_ms_per_mb": round(c.c, 6), "coef_d_ms_per_mb_spilled": round(c.d, 6),
            "spill_knee_mb": round(c.knee_mb, 6), "coef_slots": " ".join(f"{e:.6g}" for e in c.slot_coef),
            "status": "ok",
            "measured_at": measurement.now_iso(), "arch": plan.arch, "net_input_shape": plan.input_text,
            "num_classes": plan.num_classes, "opset": dev.default_opset, "reference_id": table.reference_id,
            "reference_ms": "" if table.reference_ms is None else round(table.reference_ms, 6),
            "notes": f"relative least squares over {c.points} measured whole networks (median of their rounds); "
                     f"leave-one-out mean |error| {100 * c.loo_error:.2f} %"
                     f"{f'; slot terms shrunk by {c.ridge:g}' if c.slot_coef else ''}; {table.noise.text()}"}


def pairs_here(table: LatencyTable, device: str | DeviceProfile, options: MeasureOptions | None) -> bool:
    """Whether ``table`` was timed paired and ``device`` can be timed that way with ``options`` now."""
    return bool(table.reference_id) and table.reference_ms is not None and \
        measurement.can_pair(device, options or MeasureOptions())


@dataclass(frozen=True)
class TableScaleLatency:
    """A model re-timed the way a table was built, so that its latency compares with the table's predictions."""

    latency_ms: float  # paired table: vs_reference × the table's reference latency; otherwise the raw median
    measurement: measurement.Measurement  # the model's own runs (raw statistics)
    method: str
    device_speed: float | None  # the reference's latency now / in the table (> 1: the device runs slower)


# per bank: (reference id, input shape, device, precision) -> (its scratch folder, the exported reference)
_REFERENCES: weakref.WeakKeyDictionary[ModelBank, dict[tuple, tuple[tempfile.TemporaryDirectory, Path]]] = \
    weakref.WeakKeyDictionary()


def table_reference(table: LatencyTable, bank: ModelBank, dev: DeviceProfile) -> Path:
    """The table's reference network exported (and for int8 quantized) as its build timed it: once per bank,
    table and device in this process, however many deployments and retries re-measure against it."""
    key = (table.reference_id, table.plan.input_shape, dev.name, table.precision)
    exported = _REFERENCES.setdefault(bank, {})
    if key not in exported:
        scratch = tempfile.TemporaryDirectory(prefix="slimda-reference-")  # removed with the bank or at exit
        reference = Exporter(bank, table.plan, dev, Path(scratch.name), table.config(table.reference_id),
                             INT8 if table.precision == INT8 else None).reference_path
        assert reference is not None  # a reference configuration was given
        exported[key] = (scratch, reference)
    return exported[key][1]


def measure_like_table(onnx_path: str | os.PathLike, table: LatencyTable | None, bank: ModelBank,
                       device: str | DeviceProfile, options: MeasureOptions | None,
                       artifact: Artifact | None = None) -> TableScaleLatency:
    """Time ``onnx_path`` (or the ``artifact`` built from it, which is then what is loaded and timed) as
    ``table`` was built: paired with the table's reference where the table is paired and the device allows it
    (the latency at the device's speed during the build), else its raw median."""
    dev = get_device(device)
    opts = options or MeasureOptions()
    if table is None or not pairs_here(table, dev, opts):
        raw = measurement.measure(onnx_path, dev, opts, artifact)
        return TableScaleLatency(raw.stats.p50, raw, "median of its own runs", None)
    assert table.reference_ms is not None
    with one_torch_thread():
        reference = table_reference(table, bank, dev)
        pair = measurement.measure_paired(onnx_path, reference, dev, opts, artifact)
    return TableScaleLatency(
        pair.vs_reference * table.reference_ms, pair.measurement,
        f"paired with the table's reference {table.reference_id}: {pair.vs_reference:.4f} × its "
        f"{table.reference_ms:.4f} ms in the table", pair.reference_ms / table.reference_ms)


# ------------------------------------------------------------------------------------- banks to profile

def trained_table_target(bank: str | os.PathLike, device: str, resolution: tuple[int, int] | None = None,
                         out: str | os.PathLike | None = None,
                         precision: str | None = None) -> tuple[ModelBank, tuple[int, int] | None, Path]:
    """A trained bank (run directory or bank.pt), the input size its table is timed at (``resolution``, else
    the size the bank was trained at) and where the table goes (``out``, else ``table_path``: one per precision)."""
    from slimda.model.bank import load_bank

    model, metadata = load_bank(bank)
    run_dir = Path(bank) if Path(bank).is_dir() else Path(bank).parent
    return model, resolution or metadata.preprocessing.size, Path(out) if out else table_path(run_dir, device,
                                                                                             precision)


def untrained_bank(arch: str, num_classes: int = 10, in_channels: int | None = None) -> ModelBank:
    """A freshly initialised bank of ``arch``: its latency table can be built before any training."""
    return ModelBank(arch, num_classes, in_channels or default_in_channels(arch)).eval()
