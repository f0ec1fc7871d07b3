"""Bank reports per device: every scored sub-network's predicted latency, UPEM (and target accuracy when
the target has labels), FLOPs and parameters; the Pareto front; and plots with the deployed points marked.
``bench_devices`` writes them (slimda bench, and quickstart's last stage).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from slimda.model.space import WidthConfig, WidthSpace
from slimda.select.evaluate import TargetScorer
from slimda.tables import write_csv_atomic

if TYPE_CHECKING:
    from slimda.deploy.setup import BankRun

REPORT_COLUMNS: tuple[str, ...] = (
    "device", "config_id", "width", "kind", "predicted_latency_ms", "upem", "target_acc", "flops_m", "params_m",
    "pareto_upem", "pareto_acc",
)


def report_configs(space: WidthSpace, count: int, seed: int,
                   extra: Sequence[WidthConfig] = ()) -> list[tuple[str, WidthConfig]]:
    """(kind, config): the uniform widths, ``extra`` (e.g. deployed ones) and ``count`` random ones."""
    named: dict[str, tuple[str, WidthConfig]] = {}
    for r in space.ratios:
        c = space.uniform(r)
        named.setdefault(c.id, ("uniform", c))
    for c in (space.smallest(), space.largest()):
        named.setdefault(c.id, ("uniform", c))
    for c in extra:
        named.setdefault(c.id, ("deployed", c))
    for c in space.sample_many(count, seed, exclude=[c for _, c in named.values()]):
        named.setdefault(c.id, ("random", c))
    return list(named.values())


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (cost, loss) points no other point beats on both (lower is better on both)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    on_front = [False] * len(points)
    best = float("inf")
    for i in order:
        if points[i][1] < best:
            on_front[i] = True
            best = points[i][1]
    return on_front


def device_rows(device: str, configs: Sequence[tuple[str, WidthConfig]], scorer: TargetScorer,
                predict_ms: Callable[[WidthConfig], float], flops: Callable[[WidthConfig], float],
                params: Callable[[WidthConfig], float], ratio_of: Callable[[WidthConfig], float],
                progress: Callable[[int], None] | None = None) -> list[dict[str, object]]:
    """One report row per configuration (scored by ``scorer``, costs predicted), Pareto fronts flagged."""
    rows = []
    for kind, config in configs:
        score = scorer.score(config)
        rows.append({"device": device, "config_id": config.id, "width": round(ratio_of(config), 4), "kind": kind,
                     "predicted_latency_ms": round(predict_ms(config), 6), "upem": round(score.upem, 6),
                     "target_acc": "" if score.target_acc is None else round(score.target_acc, 5),
                     "flops_m": round(flops(config) / 1e6, 4), "params_m": round(params(config) / 1e6, 5)})
        if progress:
            progress(1)
    front = pareto_front([(r["predicted_latency_ms"], r["upem"]) for r in rows])  # type: ignore[misc]
    labelled = all(r["target_acc"] != "" for r in rows)
    acc_front = pareto_front([(r["predicted_latency_ms"], -r["target_acc"]) for r in rows]  # type: ignore[misc]
                             ) if labelled else [False] * len(rows)
    for row, on, on_acc in zip(rows, front, acc_front):
        row["pareto_upem"] = on
        row["pareto_acc"] = on_acc if labelled else ""
    return rows


def read_deployments(report_csv: Path, device: str) -> list[dict[str, str]]:
    """The rows of a deploy_report.csv for ``device`` (the latest per configuration)."""
    if not report_csv.is_file():
        return []
    with report_csv.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("device") == device]
    return list({r["config_id"]: r for r in rows}.values())


def plot_device(rows: Sequence[Mapping[str, object]], deployments: Sequence[Mapping[str, str]], path: Path,
                title: str) -> Path:
    """PNG: UPEM (and target accuracy, when labelled) against predicted latency; front and deployments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = rows and all(r["target_acc"] != "" for r in rows)
    panels = [("upem", "UPEM (lower is better)", "pareto_upem")]
    if labelled:
        panels.append(("target_acc", "target accuracy (labels: report only)", "pareto_acc"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    by_id = {r["config_id"]: r for r in rows}
    for ax, (column, label, front_col) in zip(axes[0], panels):
        for kind, style in (("random", dict(c="0.6", s=14)), ("uniform", dict(c="tab:blue", s=30, marker="s"))):
            pts = [r for r in rows if r["kind"] == kind]
            ax.scatter([r["predicted_latency_ms"] for r in pts], [r[column] for r in pts], label=kind, **style)
        front = sorted((r for r in rows if r[front_col] is True), key=lambda r: r["predicted_latency_ms"])
        ax.plot([r["predicted_latency_ms"] for r in front], [r[column] for r in front], "-", c="tab:green",
                lw=1.5, label="Pareto front")
        for i, d in enumerate(deployments):
            r = by_id.get(d["config_id"])
            if r is None:
                continue
            measured = d.get("measured_latency_ms") or ""
            ax.scatter([r["predicted_latency_ms"]], [r[column]], marker="*", s=220, c="tab:red", zorder=5,
                       label="deployed" if i == 0 else None)
            note = f"{d.get('budget', '')}" + (f"\nmeasured {float(measured):.3g} ms" if measured else "")
            ax.annotate(note, (r["predicted_latency_ms"], r[column]), textcoords="offset points", xytext=(6, 6),
                        fontsize=8)
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path


def write_device_report(rows: Sequence[Mapping[str, object]], path: Path) -> Path:
    """The rows as a CSV of ``REPORT_COLUMNS``, written atomically."""
    return write_csv_atomic(path, [{c: r.get(c, "") for c in REPORT_COLUMNS} for r in rows])


def lut_devices(run_dir: Path) -> list[str]:
    """Devices with a lookup table in RUN/latency/ (validation files excluded)."""
    folder = run_dir / "latency"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.csv") if not p.stem.endswith("-validation"))


def bench_devices(run: BankRun, scorer: TargetScorer, devices: Sequence[str], deploy_dir: Path, out: Path,
                  configs: int, seed: int) -> list[Path]:
    """Report (CSV) and plot (PNG) per device of ``configs`` random sub-networks besides the uniform widths
    and the deployed ones of ``deploy_dir``; returns the files written. Every table is loaded before any work."""
    from slimda.console import progress_bar
    from slimda.deploy.outputs import REPORT_NAME
    from slimda.latency.table import load_table
    from slimda.model.cost import BankCosts
    from slimda.profilers.devices import get_device

    bank = run.bank
    costs = BankCosts(bank, run.meta.input_chw)
    tables = {name: load_table(run.run_dir, get_device(name).name) for name in devices}  # all present, or fail now
    written = []
    for name, table in tables.items():
        deployments = read_deployments(deploy_dir / REPORT_NAME, name)
        deployed = [bank.space.from_id(d["config_id"]) for d in deployments]
        chosen = report_configs(bank.space, configs, seed, deployed)
        with progress_bar(len(chosen), f"bench {name}", "config") as bar:
            rows = device_rows(name, chosen, scorer, table.predict, costs.flops, costs.params,
                               bank.space.ratio_of, bar.update)
        written.append(write_device_report(rows, out / f"{name}.csv"))
        title = f"{bank.arch} on {name}: target {scorer.target.name}, head {scorer.head}"
        written.append(plot_device(rows, deployments, out / f"{name}.png", title))
    return written
