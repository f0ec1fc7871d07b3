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

from slimda.console import one_torch_thread, progress_bar, say
from slimda.deploy.outputs import (
    REPORT_COLUMNS,
    REPORT_NAME,
    append_report,
    latency_record,
    report_row,
    round_or_none,
    staging,
)
from slimda.deploy.export import ExportResult, export_for_device
from slimda.deploy.precision import (
    Candidate,
    Int8Settings,
    QuantizedScorer,
    choose,
    precision_record,
    precisions_to_search,
)
from slimda.errors import ConfigError, SlimdaError
from slimda.export.manifest import (
    MANIFEST_NAME,
    ArtefactRecord,
    Attempt,
    ChosenNetwork,
    InputRecipe,
    Manifest,
    Provenance,
    Scores,
    SearchRecord,
    file_records,
    sha256_file,
    tool_versions,
)
from slimda.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from slimda.model.bank import BankMeta, ModelBank
from slimda.model.cost import BankCosts
from slimda.model.heads import get_head
from slimda.model.space import WidthConfig
from slimda.profilers.devices import INT8
from slimda.select.budget import Budget, Budgets
from slimda.select.evaluate import TargetScorer
from slimda.select.search import Constraint, InfeasibleBudget, SearchResult, SearchSettings, evolutionary_search
from slimda.tables import write_json_atomic

if TYPE_CHECKING:
    from slimda.latency.build import TableScaleLatency
    from slimda.latency.table import LatencyTable
    from slimda.profilers.config import MeasureOptions
    from slimda.profilers.devices import DeviceProfile

__all__ = ["Budget", "Budgets", "Deployer", "DeployOptions", "Deployment", "ExportResult", "Measurer",
           "REPORT_COLUMNS", "REPORT_NAME", "deploy_fleet"]

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
    precision: str | None = None  # fp32, fp16, bf16, int8 or auto (every one the device runs); None: its default
    batch: int | None = None  # batch of the exported input; None: the batch the device's table was timed at (1)
    dynamic_batch: bool = False  # export a symbolic batch axis (ONNX Runtime, OpenVINO), timed at the table's
    int8: Int8Settings = Int8Settings()  # how int8 candidates are calibrated, scored and accepted
    label_budget: int = 0  # target images picked for a person to label (``slimda.deploy.labelling``); 0: none


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
        self._quantized: QuantizedScorer | None = None
        self._said: set[str] = set()

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return (self.prep.channels, *self.prep.size)

    def _table(self, device: DeviceProfile, precision: str | None = None) -> LatencyTable:
        from slimda.latency.table import load_table

        table = load_table(self.run_dir, device.name, precision, self.bank)
        if table.arch != self.bank.arch or tuple(table.input_shape[1:]) != self.input_chw:
            flag = "" if precision in (None, device.precision) else f" --precision {precision}"
            raise SlimdaError(
                f"the latency table for {device.name} was built for {table.arch} at input "
                f"{'x'.join(map(str, table.input_shape))}, but this bank is {self.bank.arch} at "
                f"1x{'x'.join(map(str, self.input_chw))}: rebuild it with "
                f"`slimda-profile --device {device.name} --bank {self.run_dir}{flag}`")
        return table

    def _tables(self, device: DeviceProfile, precisions: Sequence[str],
                budgets: Budgets) -> dict[str, LatencyTable | None]:
        """Each precision's table (None where there is none and no latency budget needs one). With several
        precisions (``auto``), one without a usable table is left out of the search, and the user is told."""
        tables: dict[str, LatencyTable | None] = {}
        missing = []
        for precision in precisions:
            try:
                tables[precision] = self._table(device, precision)
            except SlimdaError as err:
                if budgets.latency and len(precisions) == 1:
                    raise
                if budgets.latency:
                    missing.append(f"{precision}: {err}")
                else:
                    tables[precision] = None  # latency is then predicted only where a table exists
        if not tables:
            raise SlimdaError(f"{device.name}: no latency table for any of its precisions, so the latency budget "
                              "cannot be checked:\n  " + "\n  ".join(missing))
        for line in missing:
            if line not in self._said:  # once per deployer, not at every retry or deployment
                self._said.add(line)
                say(f"{device.name}: not searching {line}")
        batches = {t.input_shape[0] for t in tables.values() if t is not None}
        if len(batches) > 1:
            raise SlimdaError(f"{device.name}: its tables were timed at different batch sizes ({sorted(batches)}); "
                              "rebuild them at one batch size")
        return tables

    def _batch(self, device: DeviceProfile, tables: dict[str, LatencyTable | None], budgets: Budgets) -> int:
        """The exported (and timed) batch: ``DeployOptions.batch``, else the tables'. A table serves only the
        batch it was timed at: one of another batch is refused under a latency budget and ignored otherwise."""
        if self.options.dynamic_batch and not device.dynamic_batch:
            raise ConfigError(f"{device.name} runs TensorRT engines built for one input shape: --dynamic-batch is "
                              "for ONNX Runtime and OpenVINO devices; deploy a fixed batch with --batch N")
        timed = next((t.input_shape[0] for t in tables.values() if t is not None), None)
        batch = self.options.batch or timed or 1
        if batch < 1:
            raise ConfigError(f"--batch must be at least 1, got {batch}")
        if timed is not None and timed != batch:
            if budgets.latency:
                raise SlimdaError(f"{device.name}: --batch {batch}, but its latency table was timed at batch {timed}, "
                                  f"and a table predicts only the batch it was built at: build one with "
                                  f"`slimda-profile --device {device.name} --bank {self.run_dir} --batch {batch}`")
            for precision in tables:
                tables[precision] = None  # FLOPs/parameter budgets only: no latency prediction at this batch
        return batch

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

    @property
    def quantized(self) -> QuantizedScorer:
        """int8 candidates quantized and scored, shared by the fleet (made on first use)."""
        if self._quantized is None:
            self._quantized = QuantizedScorer(self.scorer, self.options.int8, self.options.dynamic_batch)
        return self._quantized

    def _select(self, device: DeviceProfile, budgets: Budgets, tables: dict[str, LatencyTable | None],
                limits: dict[str, float | None],
                input_shape: tuple[int, ...]) -> tuple[Candidate, list[Candidate], SearchResult]:
        """Search each precision under its own table, score its finalists as deployed, and pick the least UPEM."""
        candidates: list[Candidate] = []
        results: dict[str, SearchResult] = {}
        infeasible = []
        for precision, table in tables.items():
            name = device.name if len(tables) == 1 else f"{device.name} {precision}"
            try:
                result = self._search(name, self._constraints(budgets, table, limits[precision]))
            except InfeasibleBudget as err:
                if len(tables) == 1:
                    raise
                infeasible.append(str(err))
                continue
            results[precision] = result
            predict = table.predict if table is not None else None
            if precision == INT8:
                ranked = sorted(result.evaluated.items(), key=lambda item: item[1])[: self.options.int8.finalists]
                for config_id, _ in ranked:
                    config = self.bank.space.from_id(config_id)
                    candidates.append(self.quantized.candidate(config, device.int8_activations, input_shape,
                                                               device.default_opset,
                                                               round_or_none(predict(config)) if predict else None))
            else:
                score = self.scorer.score(result.best)
                predicted = round_or_none(predict(result.best)) if predict else None
                estimate = self.scorer.estimate(result.best)
                candidates.append(Candidate(result.best, precision, predicted, score.upem, score.upem,
                                            target_acc=score.target_acc, estimate=estimate,
                                            fitness=self.scorer.fitness_from(score.upem, estimate)))
        if not results:
            raise InfeasibleBudget("; ".join(infeasible))
        winner = choose(candidates, self.options.int8.agreement)
        if winner is None:
            raise SlimdaError(
                f"{device.name}: nothing was deployed: every int8 finalist agrees with its fp32 network on fewer "
                f"than {self.options.int8.agreement:.0%} of the held-out target images ("
                + ", ".join(f"{c.config.id} {c.agreement:.1%}" for c in candidates) + "). Calibrate on more "
                "images (--int8-images) or with another --int8-method, lower --int8-agreement, or deploy fp32")
        return winner, candidates, results[winner.precision]

    def _search(self, device_name: str, constraints: list[Constraint]) -> SearchResult:
        s = self.options.settings
        total = s.population + s.generations * (s.mutations + s.crossovers)
        with progress_bar(total, f"search {device_name}", "cand", self.options.progress) as bar:
            best = [float("inf")]

            def fitness(config: WidthConfig) -> float:
                value = self.scorer.fitness(config)
                if value < best[0]:
                    best[0] = value
                    bar.set_postfix_str(f"best {self.scorer.select_by} {value:.4f}")
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
        if self.options.label_budget > self.scorer.target.count:  # refused before the search, not after
            raise ConfigError(f"--label-budget {self.options.label_budget} is more than the "
                              f"{self.scorer.target.count} scored target images: lower it or raise --score-images")
        opts = self.options.measure_options or MeasureOptions()
        check_target(device, opts)  # e.g. a Jetson's engine is built and timed there: it needs --host
        tables = self._tables(device, precisions_to_search(device, self.options.precision), budgets)
        batch = self._batch(device, tables, budgets)
        input_shape = (batch, *self.input_chw)
        opts = replace(opts, batch=batch, resolution=None)
        measure = self.options.measure_with or self._measure
        tolerance = self.options.tolerance

        final = self.out_dir / device.name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        attempts: list[Attempt] = []
        limits = {p: budgets.latency.value if budgets.latency else None for p in tables}
        search_seconds = 0.0
        for attempt in range(self.options.retries + 1):
            t0 = time.perf_counter()
            chosen, candidates, result = self._select(device, budgets, tables, limits, input_shape)
            search_seconds += time.perf_counter() - t0
            config, precision, table = chosen.config, chosen.precision, tables[chosen.precision]
            popts = replace(opts, precision=precision)
            with staging(final) as stage:
                quantized = None if chosen.files is None else (chosen.files, chosen.parity or 0.0)
                recipe = InputRecipe(input_shape, self.prep, tuple(self.meta.class_names), INPUT_NAME, OUTPUT_NAME,
                                     self.options.dynamic_batch)
                exported = export_for_device(self.scorer, config, stage.path, device, input_shape, popts,
                                             self.options.ort_platform, self.options.dynamic_batch, quantized,
                                             recipe.model_metadata(get_head(self.head).output_text, precision))
                measured = measure(exported, device, popts, table) if self.options.measure else None
                predicted = chosen.predicted_ms
                latency_limit = limits[precision]
                attempts.append(Attempt(attempt + 1, config.id, round_or_none(predicted), round_or_none(latency_limit),
                                        round_or_none(measured.latency_ms if measured else None), precision))
                over = budgets.latency_met(measured.latency_ms if measured else None, tolerance) is False
                last = attempt == self.options.retries or not over
                if not last and config.id == self.bank.space.smallest().id:
                    last = True  # nothing smaller to try
                if last:
                    if self.options.label_budget:
                        self._label_request(exported, stage.path, final, input_shape, chosen)
                    manifest = Manifest(
                        device.name, device.runtime, budgets, self._network(config),
                        latency_record(budgets, measured, predicted, tolerance), self._scores(chosen),
                        recipe,
                        _artefact_record(exported, device.default_opset),
                        self._provenance(result, measured, attempts, search_seconds, started, final),
                        precision_record(chosen, candidates, self.options.int8, self.scorer.target.count))
                    write_json_atomic(stage.path / MANIFEST_NAME, manifest.to_dict())
                    break
                stage.commit = False
            # over budget: tighten that precision's predicted limit by how far the prediction was off, search again
            ratio = budgets.latency.value / measured.latency_ms  # type: ignore[union-attr]
            limit = min(latency_limit or budgets.latency.value, predicted or latency_limit) * ratio * 0.98
            # never below the smallest sub-network: it is the last thing left to try
            limits[precision] = max(limit, table.predict(self.bank.space.smallest()))
            say(f"{device.name}: {config.id} ({precision}) measured {measured.latency_ms:.4g} ms, over the "
                f"{budgets.latency.text} budget (predicted {predicted:.4g} ms); searching again under "
                f"{limits[precision]:.4g} ms predicted")
        if over:  # still over budget beyond the tolerance: say so rather than let the table look like success
            say(f"warning: {device.name}: {config.id} measured {measured.latency_ms:.4g} ms, over the "
                f"{budgets.latency.text} budget after {len(attempts)} attempt(s); it is deployed so that you can "
                + ("inspect it, but nothing smaller exists: relax the budget or use a faster device"
                   if config.id == self.bank.space.smallest().id else
                   "inspect it: raise --retries, rebuild the table on an idle device, or relax the budget"))
        append_report(self.out_dir / REPORT_NAME, report_row(manifest))
        return Deployment(device.name, final, manifest, result, attempts)

    def _measure(self, exported: ExportResult, device: DeviceProfile, opts: MeasureOptions,
                 table: LatencyTable | None) -> TableScaleLatency:
        """The shipped artefact (ONNX, IR, ``.ort``, engine) timed on the device as its table was timed."""
        from slimda.latency.build import measure_like_table

        with one_torch_thread():
            return measure_like_table(exported.onnx, table, self.bank, device, opts, exported.artifact)

    def _label_request(self, exported: ExportResult, folder: Path, final: Path, input_shape: tuple[int, ...],
                       chosen: Candidate) -> None:
        """Target images for a person to label, picked from the predictions of the model file that ships."""
        import numpy as np
        import torch

        from slimda.deploy.labelling import write_label_request
        from slimda.export.quantize import onnx_outputs

        target = self.scorer.target
        images = torch.cat(target.images).cpu().numpy().astype(np.float32)
        (out,) = onnx_outputs([exported.onnx], images, 64 if self.options.dynamic_batch else input_shape[0])
        probs = get_head(self.head).probabilities(torch.from_numpy(out)).numpy()
        written = write_label_request(folder, probs, target.domain, target.scored, list(self.meta.class_names),
                                      chosen.estimate.temperature if chosen.estimate else 1.0,
                                      self.options.label_budget, self.options.settings.seed)
        say(f"{self.options.label_budget} target images to label in {final / written.name}/: fill in labels.csv "
            f"there, then run `slimda label-estimate {final}`")

    # -- the manifest's parts
    def _network(self, config: WidthConfig) -> ChosenNetwork:
        return ChosenNetwork(config.id, round(self.bank.space.ratio_of(config), 4), config.as_dict(), self.bank.arch,
                             round(self.costs.flops(config) / 1e6, 4), round(self.costs.params(config) / 1e6, 5),
                             self.head, get_head(self.head).output_text)

    def _scores(self, chosen: Candidate) -> Scores:
        """UPEM, target accuracy and its estimate as deployed (of the quantized model for int8)."""
        return Scores(round(chosen.upem, 6), self.scorer.distance,
                      None if chosen.target_acc is None else round(chosen.target_acc, 5),
                      None if chosen.estimate is None else chosen.estimate.to_dict(), self.scorer.select_by)

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
            _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), str(final),
            self.scorer.compute.label)


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

def _artefact_record(exported: ExportResult, opset: int) -> ArtefactRecord:
    art = exported.artifact
    files = file_records(dict.fromkeys([exported.onnx, *exported.extra_files, *art.files]), exported.onnx.parent)
    return ArtefactRecord(opset, float(f"{exported.parity:.3g}"), art.kind, art.path.name, dict(art.notes), files)


def _bank_hash(path: Path | None) -> str | None:
    return sha256_file(path) if path is not None and path.is_file() else None
