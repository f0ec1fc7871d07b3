"""Budget → the best sub-network for a device, exported, converted, re-measured and described.

For each device: constraints from the budgets (latency predicted by the device's lookup table, FLOPs,
parameters), an evolutionary search minimising UPEM on target images (no target label is read), then the
winner is extracted with BatchNorm recalibrated on target images, exported to ONNX at the device's opset,
checked (``onnx.checker``, parity with PyTorch), converted to the runtime's artefact and timed on the
device the way its table was built (paired with the table's reference where the table is, so that a
device whose speed wanders compares at the speed the table was built at; the raw median is recorded
too). When the measured latency is over the budget (by more than ``DeployOptions.tolerance``), the search
runs again with the predicted limit scaled down by measured/predicted (``retries`` times): the user asked
for a model that meets the budget on the device, not for a prediction that does. The same rule
(``Budgets.latency_met``) decides the retries, the over-budget warning and the manifest's ``within_budget``,
and the manifest records the tolerance it used. Outputs per device go to ``DIR/<device>/`` (replaced
atomically) and one row per deployment is appended to ``DIR/deploy_report.csv``.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from slimda.console import one_torch_thread, progress_bar, say
from slimda.deploy.outputs import REPORT_COLUMNS, REPORT_NAME, append_report, report_row, staging
from slimda.errors import ConfigError, SlimdaError
from slimda.export.manifest import (
    MANIFEST_NAME,
    ArtefactRecord,
    Attempt,
    ChosenNetwork,
    InputRecipe,
    LatencyRecord,
    Manifest,
    Provenance,
    Scores,
    SearchRecord,
    file_records,
    sha256_file,
    tool_versions,
)
from slimda.export.onnx_export import INPUT_NAME, OUTPUT_NAME, PARITY_TOLERANCE, export_onnx, parity_error
from slimda.model.bank import BankMeta, ModelBank
from slimda.model.cost import BankCosts
from slimda.model.heads import get_head
from slimda.model.space import WidthConfig
from slimda.select.budget import Budget, Budgets
from slimda.select.evaluate import TargetScorer, calibrated
from slimda.select.search import Constraint, InfeasibleBudget, SearchResult, SearchSettings, evolutionary_search
from slimda.tables import write_json_atomic

if TYPE_CHECKING:
    from slimda.latency.build import TableScaleLatency
    from slimda.latency.table import LatencyTable
    from slimda.profilers.base import Artifact
    from slimda.profilers.config import MeasureOptions
    from slimda.profilers.devices import DeviceProfile

__all__ = ["Budget", "Budgets", "Deployer", "DeployOptions", "Deployment", "ExportResult", "Measurer",
           "REPORT_COLUMNS", "REPORT_NAME", "deploy_fleet"]
PARITY_IMAGES = 8  # target images the exported model is compared on, one forward each


@dataclass(frozen=True)
class ExportResult:
    """One sub-network exported for a device: the ONNX file, the runtime's artefact and their parity."""

    config: WidthConfig
    onnx: Path
    artifact: Artifact
    parity: float  # largest relative ONNX Runtime vs PyTorch difference (see ``PARITY_TOLERANCE``)
    net: torch.nn.Module  # the calibrated static network that was exported


# Times an exported model on the device: (export, device, how to measure, the device's table or None).
Measurer = Callable[["ExportResult", "DeviceProfile", "MeasureOptions", "LatencyTable | None"], "TableScaleLatency"]


@dataclass
class DeployOptions:
    """How to deploy; ``measure_options`` says how to reach and time the device (see slimda-profile)."""

    measure_options: MeasureOptions | None = None
    settings: SearchSettings = SearchSettings()
    measure: bool = True  # time the exported model on the device
    retries: int = 2  # searches again when the measured latency is over budget
    tolerance: float = 0.0  # measured latency may exceed the budget by this share and still be within it
    ort_platform: str = "arm"  # ORT-format target for ort-mobile (phones are arm)
    progress: bool | None = None  # tqdm bars: None = when stderr is a terminal
    measure_with: Measurer | None = None  # None: time it the way the device's table was built


@dataclass
class Deployment:
    """One device's result: the manifest written, and the search behind it."""

    device: str
    dir: Path
    manifest: Manifest
    search: SearchResult
    attempts: list[Attempt] = field(default_factory=list)


class Deployer:
    """Deploys one bank to devices; FLOPs, parameter and UPEM evaluations are shared between devices."""

    def __init__(self, bank: ModelBank, metadata: BankMeta, run_dir: Path, scorer: TargetScorer, out_dir: Path,
                 options: DeployOptions, bank_file: Path | None = None) -> None:
        self.bank, self.meta, self.run_dir, self.scorer = bank, metadata, Path(run_dir), scorer
        self.out_dir, self.options, self.bank_file = Path(out_dir), options, bank_file
        self.prep = metadata.preprocessing
        self.head = scorer.head
        self.costs = BankCosts(bank, self.input_chw)

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return (self.prep.channels, *self.prep.size)

    def _table(self, device: DeviceProfile) -> LatencyTable:
        from slimda.latency.table import load_table

        table = load_table(self.run_dir, device.name)
        if table.arch != self.bank.arch or tuple(table.input_shape[1:]) != self.input_chw:
            raise SlimdaError(
                f"the latency table for {device.name} was built for {table.arch} at input "
                f"{'x'.join(map(str, table.input_shape))}, but this bank is {self.bank.arch} at "
                f"1x{'x'.join(map(str, self.input_chw))}: rebuild it with "
                f"`slimda-profile --device {device.name} --bank {self.run_dir}`")
        return table

    def _optional_table(self, device: DeviceProfile) -> LatencyTable | None:
        """The device's table when one fits this bank (latency is then predicted, not constrained)."""
        try:
            return self._table(device)
        except SlimdaError:
            return None

    def _constraints(self, budgets: Budgets, table: LatencyTable | None,
                     latency_limit: float | None) -> list[Constraint]:
        out = []
        if budgets.latency:
            assert table is not None  # a latency budget needs the table (``_table`` raised otherwise)
            out.append(Constraint("latency", table.predict, latency_limit or budgets.latency.value, " ms"))
        if budgets.flops:
            out.append(Constraint("FLOPs", self.costs.flops, budgets.flops.value))
        if budgets.params:
            out.append(Constraint("parameters", self.costs.params, budgets.params.value))
        return out

    def _search(self, device_name: str, constraints: list[Constraint]) -> SearchResult:
        s = self.options.settings
        total = s.population + s.generations * (s.mutations + s.crossovers)
        with progress_bar(total, f"search {device_name}", "cand", self.options.progress) as bar:
            def fitness(config: WidthConfig) -> float:
                known = config.id in self.scorer.cache
                value = self.scorer.upem(config)
                if not known:
                    bar.set_postfix_str(f"best upem {min(c.upem for c in self.scorer.cache.values()):.4f}")
                return value

            try:
                result = evolutionary_search(self.bank.space, fitness, constraints, s, progress=bar.update)
            except InfeasibleBudget as err:
                raise InfeasibleBudget(f"{device_name}: {err}") from None
        return result

    # -- one device
    def deploy(self, device_name: str, budgets: Budgets) -> Deployment:
        """Search, export, convert and re-measure for one device; writes ``DIR/<device>/`` and a report row."""
        from slimda.profilers.devices import get_device
        from slimda.profilers.measurement import MeasureOptions, check_target

        started = time.perf_counter()
        device = get_device(device_name)
        opts = self.options.measure_options or MeasureOptions()
        check_target(device, opts)  # e.g. a Jetson's engine is built and timed there: it needs --host
        table = self._table(device) if budgets.latency else self._optional_table(device)
        batch = table.input_shape[0] if table is not None else 1
        input_shape = (batch, *self.input_chw)
        opts = replace(opts, batch=batch, resolution=None)
        measure = self.options.measure_with or self._measure
        tolerance = self.options.tolerance

        final = self.out_dir / device.name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        attempts: list[Attempt] = []
        latency_limit = budgets.latency.value if budgets.latency else None
        search_seconds = 0.0
        for attempt in range(self.options.retries + 1):
            t0 = time.perf_counter()
            result = self._search(device.name, self._constraints(budgets, table, latency_limit))
            search_seconds += time.perf_counter() - t0
            config = result.best
            with staging(final) as stage:
                exported = self._export(config, stage.path, device, input_shape, opts)
                measured = measure(exported, device, opts, table) if self.options.measure else None
                predicted = table.predict(config) if table is not None else None
                attempts.append(Attempt(attempt + 1, config.id, _round(predicted), _round(latency_limit),
                                        _round(measured.latency_ms if measured else None)))
                over = budgets.latency_met(measured.latency_ms if measured else None, tolerance) is False
                last = attempt == self.options.retries or not over
                if not last and config.id == self.bank.space.smallest().id:
                    last = True  # nothing smaller to try
                if last:
                    manifest = Manifest(
                        device.name, device.runtime, budgets, self._network(config),
                        _latency_record(budgets, measured, predicted, tolerance), self._scores(config),
                        InputRecipe(input_shape, self.prep, tuple(self.meta.class_names), INPUT_NAME, OUTPUT_NAME),
                        _artefact_record(exported, device.default_opset),
                        self._provenance(result, measured, attempts, search_seconds, started, final))
                    write_json_atomic(stage.path / MANIFEST_NAME, manifest.to_dict())
                    break
                stage.commit = False
            # over budget: tighten the predicted limit by how far the prediction was off, then search again
            ratio = budgets.latency.value / measured.latency_ms  # type: ignore[union-attr]
            latency_limit = min(latency_limit or budgets.latency.value, predicted or latency_limit) * ratio * 0.98
            # never below the smallest sub-network: it is the last thing left to try
            latency_limit = max(latency_limit, table.predict(self.bank.space.smallest()))
            say(f"{device.name}: {config.id} measured {measured.latency_ms:.4g} ms, over the {budgets.latency.text} "
                 f"budget (predicted {predicted:.4g} ms); searching again under {latency_limit:.4g} ms predicted")
        if over:  # still over budget beyond the tolerance: say so rather than let the table look like success
            say(f"warning: {device.name}: {config.id} measured {measured.latency_ms:.4g} ms, over the "
                f"{budgets.latency.text} budget after {len(attempts)} attempt(s); it is deployed so that you can "
                + ("inspect it, but nothing smaller exists: relax the budget or use a faster device"
                   if config.id == self.bank.space.smallest().id else
                   "inspect it: raise --retries, rebuild the table on an idle device, or relax the budget"))
        append_report(self.out_dir / REPORT_NAME, report_row(manifest))
        return Deployment(device.name, final, manifest, result, attempts)

    def _export(self, config: WidthConfig, stage: Path, device: DeviceProfile, input_shape: tuple[int, ...],
                opts: MeasureOptions) -> ExportResult:
        from slimda.export.artifacts import build_artifact

        net = self.extract_calibrated(config)
        onnx_path = export_onnx(net, stage / "model.onnx", input_shape, device.default_opset)
        parity = self.parity(net, onnx_path, input_shape)
        if parity > PARITY_TOLERANCE:
            raise SlimdaError(f"exported ONNX differs from PyTorch by {parity:.2e} (relative; tolerance "
                              f"{PARITY_TOLERANCE:g}) for {config.id} on {device.name}; nothing was deployed")
        artifact = build_artifact(onnx_path, device, stage, opts, self.options.ort_platform)
        return ExportResult(config, onnx_path, artifact, parity, net)

    def extract_calibrated(self, config: WidthConfig) -> torch.nn.Module:
        """The static network of ``config`` with BatchNorm statistics of the target images."""
        return calibrated(self.bank, config, self.scorer.target.calibration).net(self.head).eval()

    def parity(self, net: torch.nn.Module, onnx_path: Path, input_shape: tuple[int, ...]) -> float:
        """Largest relative ONNX Runtime vs PyTorch difference over a few real target images."""
        images = torch.cat(self.scorer.target.images)[: PARITY_IMAGES * input_shape[0]]
        worst = 0.0
        for start in range(0, len(images) - input_shape[0] + 1, input_shape[0]):
            worst = max(worst, parity_error(net, onnx_path, images[start:start + input_shape[0]]))
        return worst

    def _measure(self, exported: ExportResult, device: DeviceProfile, opts: MeasureOptions,
                 table: LatencyTable | None) -> TableScaleLatency:
        """The deployed model's latency on the device, timed the way its table was (``TableScaleLatency``)."""
        from slimda.latency.build import measure_like_table

        with one_torch_thread():
            return measure_like_table(exported.onnx, table, self.bank, device, opts)

    # -- the manifest's parts
    def _network(self, config: WidthConfig) -> ChosenNetwork:
        return ChosenNetwork(config.id, round(self.bank.space.ratio_of(config), 4), config.as_dict(), self.bank.arch,
                             round(self.costs.flops(config) / 1e6, 4), round(self.costs.params(config) / 1e6, 5),
                             self.head, get_head(self.head).output_text)

    def _scores(self, config: WidthConfig) -> Scores:
        score = self.scorer.score(config)
        return Scores(round(score.upem, 6), self.scorer.distance,
                      None if score.target_acc is None else round(score.target_acc, 5))

    def _provenance(self, result: SearchResult, measured: TableScaleLatency | None, attempts: list[Attempt],
                    search_seconds: float, started: float, final: Path) -> Provenance:
        raw = measured.measurement if measured else None
        target = self.scorer.target
        search = SearchRecord(len(result.evaluated), len(result.history) - 1,
                              tuple(round(h, 6) for h in result.history), self.options.settings.seed,
                              round(search_seconds, 2))
        return Provenance(
            tool_versions({"runtime_on_device": raw.runtime_version} if raw else None), str(self.run_dir),
            _bank_hash(self.bank_file), target.name, target.count, sum(len(x) for x in target.calibration), search,
            tuple(attempts), round(time.perf_counter() - started, 2),
            _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), str(final))


def deploy_fleet(deployer: Deployer, devices: Sequence[str], budgets: Budgets,
                 log: Callable[[str], None] | None = None) -> list[Deployment]:
    """One best sub-network per device (each device's search reuses the others' UPEM evaluations)."""
    names = list(dict.fromkeys(devices))
    if not names:
        raise ConfigError("give at least one --device")
    from slimda.profilers.devices import get_device

    for name in names:  # an unknown name fails before any work
        get_device(name)
    return [deployer.deploy(name, budgets) for name in names]


# ---------------------------------------------------------------------------------------------- helpers

def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _latency_record(budgets: Budgets, measured: TableScaleLatency | None, predicted: float | None,
                    tolerance: float) -> LatencyRecord:
    """Predicted vs measured latency, and the budget's verdict on the measurement (``Budgets.latency_met``)."""
    raw = measured.measurement if measured else None
    return LatencyRecord(
        _round(predicted), _round(measured.latency_ms if measured else None), _round(raw.stats.p50 if raw else None),
        _round(raw.stats.p90 if raw else None), measured.method if measured else None,
        _round(measured.device_speed if measured else None, 4), raw.to_row() if raw else None,
        budgets.latency_met(measured.latency_ms if measured else None, tolerance), tolerance)


def _artefact_record(exported: ExportResult, opset: int) -> ArtefactRecord:
    art = exported.artifact
    files = file_records(dict.fromkeys([exported.onnx, *art.files]), exported.onnx.parent)
    return ArtefactRecord(opset, float(f"{exported.parity:.3g}"), art.kind, art.path.name, dict(art.notes), files)


def _bank_hash(path: Path | None) -> str | None:
    return sha256_file(path) if path is not None and path.is_file() else None
