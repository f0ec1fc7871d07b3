"""Budget → the best sub-network for a device, exported, converted, re-measured and described.

For each device: constraints from the budgets (latency predicted by the device's lookup table, FLOPs,
parameters), an evolutionary search minimising UPEM on target images (no target label is read), then the
winner is extracted with BatchNorm recalibrated on target images, exported to ONNX at the device's opset,
checked (``onnx.checker``, parity with PyTorch), converted to the runtime's artefact and timed on the
device the way its table was built (paired with the table's reference where the table is, so that a
device whose speed wanders compares at the speed the table was built at; the raw median is recorded
too). When the measured latency is over the budget, the search runs again with the predicted limit
scaled down by measured/predicted (``retries`` times): the user asked for a model that meets the budget
on the device, not for a prediction that does. Outputs per device go to ``DIR/<device>/`` (replaced
atomically) and one row per deployment is appended to ``DIR/deploy_report.csv``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from slimda.model.bank import ModelBank
from slimda.select.budget import Budget
from slimda.console import one_torch_thread, progress_bar, say
from slimda.model.cost import BankCosts
from slimda.data.domains import Preprocessing
from slimda.errors import ConfigError, SlimdaError
from slimda.select.evaluate import TargetScorer, preserved_batchnorm
from slimda.select.search import Constraint, InfeasibleBudget, SearchResult, SearchSettings, evolutionary_search
from slimda.model.space import WidthConfig
from slimda.tables import write_csv_atomic, write_json_atomic

REPORT_NAME = "deploy_report.csv"
REPORT_COLUMNS: tuple[str, ...] = (
    "deployed_at", "device", "budget", "config_id", "width", "predicted_latency_ms", "measured_latency_ms",
    "measured_latency_ms_raw", "measured_latency_ms_p90", "within_budget", "upem", "target_acc", "flops_m",
    "params_m", "attempts", "candidates_scored", "search_seconds", "deploy_seconds", "artifact", "dir",
)
PARITY_IMAGES = 8  # target images the exported model is compared on, one forward each


@dataclass(frozen=True)
class Budgets:
    latency: Budget | None = None
    flops: Budget | None = None
    params: Budget | None = None

    def __post_init__(self) -> None:
        if not (self.latency or self.flops or self.params):
            raise ConfigError("give at least one budget: --latency 20ms, --flops 300M or --params 2.5M")

    def text(self) -> str:
        return ", ".join(f"{b.kind} {b.text}" for b in (self.latency, self.flops, self.params) if b)

    def to_dict(self) -> dict[str, object]:
        units = {"latency": "ms", "flops": "FLOPs", "params": "parameters"}
        return {b.kind: {"text": b.text, "value": b.value, "unit": units[b.kind]}
                for b in (self.latency, self.flops, self.params) if b}


@dataclass
class DeployOptions:
    """How to deploy; ``measure_options`` says how to reach and time the device (see slimda-profile)."""

    measure_options: object = None  # slimda.profilers.measurement.MeasureOptions
    settings: SearchSettings = SearchSettings()
    measure: bool = True  # time the exported model on the device
    retries: int = 2  # searches again when the measured latency is over budget
    tolerance: float = 0.0  # measured latency may exceed the budget by this share before a retry
    ort_platform: str = "arm"  # ORT-format target for ort-mobile (phones are arm)
    progress: bool | None = None  # tqdm bars: None = when stderr is a terminal


@dataclass
class Deployment:
    """One device's result: the manifest written, and the search behind it."""

    device: str
    dir: Path
    manifest: dict
    search: SearchResult
    attempts: list[dict] = field(default_factory=list)


class Deployer:
    """Deploys one bank to devices; FLOPs, parameter and UPEM evaluations are shared between devices."""

    def __init__(self, bank: ModelBank, metadata: dict, run_dir: Path, scorer: TargetScorer, out_dir: Path,
                 options: DeployOptions, bank_file: Path | None = None) -> None:
        self.bank, self.meta, self.run_dir, self.scorer = bank, metadata, Path(run_dir), scorer
        self.out_dir, self.options, self.bank_file = Path(out_dir), options, bank_file
        self.prep = Preprocessing.from_dict(metadata["preprocessing"])
        self.head = scorer.head
        self.costs = BankCosts(bank, self.input_chw)

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return (self.prep.channels, *self.prep.size)

    def _table(self, device):
        from slimda.latency.table import load_table

        table = load_table(self.run_dir, device.name)
        if table.arch != self.bank.arch or tuple(table.input_shape[1:]) != self.input_chw:
            raise SlimdaError(
                f"the latency table for {device.name} was built for {table.arch} at input "
                f"{'x'.join(map(str, table.input_shape))}, but this bank is {self.bank.arch} at "
                f"1x{'x'.join(map(str, self.input_chw))}: rebuild it with "
                f"`slimda-profile --device {device.name} --bank {self.run_dir}`")
        return table

    def _optional_table(self, device):
        """The device's table when one fits this bank (latency is then predicted, not constrained)."""
        try:
            return self._table(device)
        except SlimdaError:
            return None

    def _constraints(self, budgets: Budgets, table, latency_limit: float | None) -> list[Constraint]:
        out = []
        if budgets.latency:
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
        from slimda.profilers.devices import get_device
        from slimda.profilers.measurement import MeasureOptions

        started = time.perf_counter()
        device = get_device(device_name)
        opts = self.options.measure_options or MeasureOptions()
        if device.is_jetson and not opts.host:
            raise ConfigError(f"{device.name}: the TensorRT engine is built on the Jetson and timed there: add "
                              "--host user@jetson (key login without a password)")
        table = self._table(device) if budgets.latency else self._optional_table(device)
        batch = table.input_shape[0] if table is not None else 1
        input_shape = (batch, *self.input_chw)
        opts = replace(opts, batch=batch, resolution=None)

        final = self.out_dir / device.name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        attempts: list[dict] = []
        latency_limit = budgets.latency.value if budgets.latency else None
        search_seconds = 0.0
        for attempt in range(self.options.retries + 1):
            t0 = time.perf_counter()
            result = self._search(device.name, self._constraints(budgets, table, latency_limit))
            search_seconds += time.perf_counter() - t0
            config = result.best
            with _staging(final) as stage:
                exported = self._export(config, stage.path, device, input_shape, opts)
                measured = self._measure(exported["onnx"], device, opts, table) if self.options.measure else None
                predicted = table.predict(config) if table is not None else None
                attempts.append({"attempt": attempt + 1, "config_id": config.id,
                                 "predicted_latency_ms": _round(predicted),
                                 "latency_limit_ms": _round(latency_limit),
                                 "measured_latency_ms": _round(measured.latency_ms if measured else None)})
                over = (budgets.latency is not None and measured is not None
                        and measured.latency_ms > budgets.latency.value * (1 + self.options.tolerance))
                last = attempt == self.options.retries or not over
                if not last and config.id == self.bank.space.smallest().id:
                    last = True  # nothing smaller to try
                if last:
                    manifest = self._manifest(config, device, budgets, result, exported, measured, predicted,
                                              input_shape, attempts, search_seconds, started, final)
                    write_json_atomic(stage.path / "manifest.json", manifest)
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
        append_report(self.out_dir / REPORT_NAME, _report_row(manifest, final))
        return Deployment(device.name, final, manifest, result, attempts)

    def _export(self, config: WidthConfig, stage: Path, device, input_shape: tuple[int, ...], opts) -> dict:
        from slimda.export.artifacts import build_artifact
        from slimda.export.onnx_export import PARITY_TOLERANCE, export_onnx

        net = self.extract_calibrated(config)
        onnx_path = export_onnx(net, stage / "model.onnx", input_shape, device.default_opset)
        parity = self.parity(net, onnx_path, input_shape)
        if parity > PARITY_TOLERANCE:
            raise SlimdaError(f"exported ONNX differs from PyTorch by {parity:.2e} (relative; tolerance "
                              f"{PARITY_TOLERANCE:g}) for {config.id} on {device.name}; nothing was deployed")
        artifact = build_artifact(onnx_path, device, stage, opts, self.options.ort_platform)
        return {"onnx": onnx_path, "artifact": artifact, "parity": parity, "net": net}

    def extract_calibrated(self, config: WidthConfig) -> torch.nn.Module:
        """The static network of ``config`` with BatchNorm statistics of the target images."""
        from slimda.model.bn import recalibrate

        with preserved_batchnorm(self.bank), torch.no_grad():
            self.bank.set_config(config)
            recalibrate(self.bank, self.scorer.target.calibration)
            net = self.bank.extract(config, head=self.head)
        return net.eval()

    def parity(self, net: torch.nn.Module, onnx_path: Path, input_shape: tuple[int, ...]) -> float:
        """Largest relative ONNX Runtime vs PyTorch difference over a few real target images."""
        from slimda.export.onnx_export import parity_error

        images = torch.cat(self.scorer.target.images)[: PARITY_IMAGES * input_shape[0]]
        worst = 0.0
        for start in range(0, len(images) - input_shape[0] + 1, input_shape[0]):
            worst = max(worst, parity_error(net, onnx_path, images[start:start + input_shape[0]]))
        return worst

    def _measure(self, onnx_path: Path, device, opts, table):
        """The deployed model's latency on the device, timed the way its table was (``TableScaleLatency``)."""
        from slimda.latency.build import measure_like_table

        with one_torch_thread():
            return measure_like_table(onnx_path, table, self.bank, device, opts)

    def _manifest(self, config, device, budgets, result, exported, measured, predicted, input_shape, attempts,
                  search_seconds, started, final) -> dict:
        from slimda.export.manifest import MANIFEST_FORMAT, file_records, tool_versions

        artifact = exported["artifact"]
        score = self.scorer.score(config)
        files = file_records(dict.fromkeys([exported["onnx"], *artifact.files]), exported["onnx"].parent)
        raw = measured.measurement if measured else None
        versions = tool_versions({"runtime_on_device": raw.runtime_version} if raw else None)
        return {
            "format": MANIFEST_FORMAT,
            "config_id": config.id,
            "width": round(self.bank.space.ratio_of(config), 4),
            "widths": config.as_dict(),
            "arch": self.bank.arch,
            "device": device.name,
            "runtime": device.runtime,
            "budget": budgets.to_dict(),
            "predicted_latency_ms": _round(predicted),
            "measured_latency_ms": _round(measured.latency_ms if measured else None),
            "measured_latency_ms_raw": _round(raw.stats.p50 if raw else None),
            "measured_latency_ms_p90": _round(raw.stats.p90 if raw else None),
            "measurement_method": measured.method if measured else None,
            "device_speed_vs_table": _round(measured.device_speed if measured else None, 4),
            "measurement": raw.to_row() if raw else None,
            "within_budget": None if not (budgets.latency and measured)
            else measured.latency_ms <= budgets.latency.value,
            "upem": round(score.upem, 6),
            "upem_distance": self.scorer.distance,
            "target_acc": None if score.target_acc is None else round(score.target_acc, 5),
            "target_acc_note": "labels of the target, read only for this report, never for the choice",
            "flops_m": round(self.costs.flops(config) / 1e6, 4),
            "params_m": round(self.costs.params(config) / 1e6, 5),
            "head": self.head,
            "input_name": "input",
            "output_name": "scores",
            "output": "log-probabilities (apply exp for probabilities)" if self.head == "cst" else "logits",
            "input_shape": list(input_shape),
            "channels": self.prep.channels,
            "mean": list(self.prep.mean),
            "std": list(self.prep.std),
            "input_size": list(self.prep.size),
            "pixel_scale": "images scaled to [0, 1] before mean/std",
            "class_names": list(self.meta.get("class_names") or []),
            "opset": device.default_opset,
            "onnx_parity": float(f"{exported['parity']:.3g}"),
            "artifact": {"kind": artifact.kind, "file": artifact.path.name, **artifact.notes},
            "files": files,
            "versions": versions,
            "bank": {"run": str(self.run_dir), "sha256": _bank_hash(self.bank_file)},
            "target": {"name": self.scorer.target.name, "images_scored": self.scorer.target.count,
                       "calibration_images": sum(len(x) for x in self.scorer.target.calibration)},
            "search": {"candidates_scored": len(result.evaluated), "generations": len(result.history) - 1,
                       "best_upem_per_generation": [round(h, 6) for h in result.history],
                       "seed": self.options.settings.seed, "seconds": round(search_seconds, 2)},
            "attempts": attempts,
            "deploy_seconds": round(time.perf_counter() - started, 2),
            "deployed_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "dir": str(final),
        }


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


def _bank_hash(path: Path | None) -> str | None:
    from slimda.export.manifest import sha256_file

    return sha256_file(path) if path is not None and path.is_file() else None


def _report_row(manifest: dict, final: Path) -> dict[str, object]:
    budget = "; ".join(f"{k} {v['text']}" for k, v in manifest["budget"].items())
    return {
        "deployed_at": manifest["deployed_at"], "device": manifest["device"], "budget": budget,
        "config_id": manifest["config_id"], "width": manifest["width"],
        "predicted_latency_ms": _blank(manifest["predicted_latency_ms"]),
        "measured_latency_ms": _blank(manifest["measured_latency_ms"]),
        "measured_latency_ms_raw": _blank(manifest["measured_latency_ms_raw"]),
        "measured_latency_ms_p90": _blank(manifest["measured_latency_ms_p90"]),
        "within_budget": _blank(manifest["within_budget"]), "upem": manifest["upem"],
        "target_acc": _blank(manifest["target_acc"]), "flops_m": manifest["flops_m"],
        "params_m": manifest["params_m"], "attempts": len(manifest["attempts"]),
        "candidates_scored": manifest["search"]["candidates_scored"],
        "search_seconds": manifest["search"]["seconds"], "deploy_seconds": manifest["deploy_seconds"],
        "artifact": manifest["artifact"]["file"], "dir": str(final),
    }


def _blank(value: object) -> object:
    return "" if value is None else value


def append_report(path: Path, row: dict[str, object]) -> None:
    """Append one row to the deployment report, rewriting it atomically (never a half-written line)."""
    import csv

    rows: list[dict[str, object]] = []
    if path.is_file():
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    rows.append(row)
    write_csv_atomic(path, [{c: r.get(c, "") for c in REPORT_COLUMNS} for r in rows])


@dataclass
class Stage:
    path: Path
    commit: bool = True


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Stage]:
    """A scratch folder beside ``final`` that replaces it when the block ends with ``stage.commit`` set,
    and is removed otherwise: ``final`` is always the previous deployment or the complete new one."""
    stage = Stage(final.parent / f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(stage.path, ignore_errors=True)
    stage.path.mkdir(parents=True)
    try:
        yield stage
        if stage.commit:
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            if final.exists():
                os.replace(final, old)
            os.replace(stage.path, final)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage.path, ignore_errors=True)
