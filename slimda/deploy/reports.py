"""Bank reports per device: every scored sub-network's predicted latency, UPEM (and target accuracy when
the target has labels), FLOPs and parameters, in each precision the device has a table for; the Pareto front
of each precision; and plots with one series per precision and the deployed points marked. int8 rows are
scored on the quantized model itself (``slimda.deploy.precision``), as deployment scores them.
``bench_devices`` writes them (slimda bench, and quickstart's last stage).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from slimda.model.space import WidthConfig, WidthSpace
from slimda.profilers.devices import INT8
from slimda.select.estimate import ESTIMATE_COLUMNS
from slimda.select.evaluate import Score, TargetScorer
from slimda.tables import atomic_output, write_csv_atomic

if TYPE_CHECKING:
    from slimda.deploy.precision import Int8Settings, QuantizedScorer
    from slimda.deploy.setup import BankRun
    from slimda.profilers.devices import DeviceProfile

BENCH_COLUMNS: tuple[str, ...] = (
    "device", "precision", "config_id", "width", "kind", "predicted_latency_ms", "upem", "target_acc",
    *ESTIMATE_COLUMNS, "flops_m", "params_m", "pareto_upem", "pareto_acc",
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


def device_rows(device: str, precision: str, configs: Sequence[tuple[str, WidthConfig]],
                score: Callable[[WidthConfig], Score], predict_ms: Callable[[WidthConfig], float],
                flops: Callable[[WidthConfig], float], params: Callable[[WidthConfig], float],
                ratio_of: Callable[[WidthConfig], float],
                progress: Callable[[int], None] | None = None) -> list[dict[str, object]]:
    """One report row per configuration in ``precision`` (scored by ``score``, costs predicted), this
    precision's Pareto fronts flagged."""
    rows = []
    no_estimate = dict.fromkeys(ESTIMATE_COLUMNS, "")
    for kind, config in configs:
        s = score(config)
        rows.append({"device": device, "precision": precision, "config_id": config.id,
                     "width": round(ratio_of(config), 4), "kind": kind,
                     "predicted_latency_ms": round(predict_ms(config), 6), "upem": round(s.upem, 6),
                     "target_acc": "" if s.target_acc is None else round(s.target_acc, 5),
                     **(no_estimate if s.estimate is None else s.estimate.columns()),
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


def read_deployments(report_csv: Path, device: str, default_precision: str) -> list[dict[str, str]]:
    """The rows of a deploy_report.csv for ``device`` (the latest per configuration and precision; rows
    written before precisions were recorded are in ``default_precision``)."""
    if not report_csv.is_file():
        return []
    with report_csv.open(newline="") as fh:
        rows = [{**r, "precision": r.get("precision") or default_precision}
                for r in csv.DictReader(fh) if r.get("device") == device]
    return list({(r["config_id"], r["precision"]): r for r in rows}.values())


def plot_device(rows: Sequence[Mapping[str, object]], deployments: Sequence[Mapping[str, str]], path: Path,
                title: str) -> Path:
    """PNG: UPEM (target accuracy, when labelled; the estimate of it and its interval as a band, when there is
    one) against predicted latency, one series per precision (uniform widths as squares), each precision's
    Pareto front, and the deployments as stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = rows and all(r["target_acc"] != "" for r in rows)
    panels = [("upem", "UPEM (lower is better)", "pareto_upem")]
    if labelled:
        panels.append(("target_acc", "target accuracy (labels: report only)", "pareto_acc"))
    estimated = [r for r in rows if r.get("est_acc", "") != ""]
    if estimated:
        panels.append(("est_acc", "estimated target accuracy, 90% interval (no labels)", None))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    by_id = {(r["config_id"], r["precision"]): r for r in rows}
    precisions = list(dict.fromkeys(str(r["precision"]) for r in rows))
    colours = dict(zip(precisions, ("tab:blue", "tab:orange", "tab:purple", "tab:green")))
    for ax, (column, label, front_col) in zip(axes[0], panels):
        for precision in precisions:
            mine = [r for r in rows if r["precision"] == precision]
            colour = colours[precision]
            if front_col is None:  # the estimate: its points, and the front's interval as a band
                mine = [r for r in mine if r.get(column, "") != ""]
                on = pareto_front([(r["predicted_latency_ms"], -r[column]) for r in mine])  # type: ignore[misc]
            for kind, style in (("random", dict(s=12, alpha=0.45)), ("uniform", dict(s=30, marker="s"))):
                pts = [r for r in mine if r["kind"] == kind]
                ax.scatter([r["predicted_latency_ms"] for r in pts], [r[column] for r in pts], c=colour,
                           label=f"{precision} {kind}", **style)
            if front_col is None:
                front = sorted((r for r, o in zip(mine, on) if o), key=lambda r: r["predicted_latency_ms"])
                ax.fill_between([r["predicted_latency_ms"] for r in front], [r["est_acc_low"] for r in front],
                                [r["est_acc_high"] for r in front], color=colour, alpha=0.2, step="post",
                                label=f"{precision} interval")
                if any(r["est_verdict"] != "reliable" for r in mine):
                    ax.text(0.02, 0.02, "estimate unreliable here: see est_verdict", transform=ax.transAxes,
                            color="tab:red", fontsize=8)
            else:
                front = sorted((r for r in mine if r[front_col] is True), key=lambda r: r["predicted_latency_ms"])
            ax.plot([r["predicted_latency_ms"] for r in front], [r[column] for r in front], "-", c=colour, lw=1.5,
                    label=f"{precision} Pareto front")
        for i, d in enumerate(deployments):
            r = by_id.get((d["config_id"], d["precision"]))
            if r is None or r.get(column, "") == "":
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
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def write_device_report(rows: Sequence[Mapping[str, object]], path: Path) -> Path:
    """The rows as a CSV of ``BENCH_COLUMNS``, written atomically."""
    return write_csv_atomic(path, [{c: r.get(c, "") for c in BENCH_COLUMNS} for r in rows])


def lut_devices(run_dir: Path) -> list[str]:
    """Devices with a lookup table (of any precision) in RUN/latency/."""
    return list(dict.fromkeys(device for device, _ in table_precisions(run_dir)))


def table_precisions(run_dir: Path, devices: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(device, precision) of every lookup table in RUN/latency/ (``devices``: only theirs), in the order of
    each device's precisions."""
    from slimda.latency.table import table_path
    from slimda.profilers.devices import DEVICES, get_device

    names = [get_device(d).name for d in devices] if devices is not None else sorted(DEVICES)
    return [(name, p) for name in names for p in DEVICES[name].precisions if table_path(run_dir, name, p).is_file()]


def _scoring(scorer: TargetScorer, quantized: QuantizedScorer, device: DeviceProfile, precision: str,
             input_shape: tuple[int, ...]) -> Callable[[WidthConfig], Score]:
    """How a report scores a configuration in ``precision``: int8 as quantized for ``device``, else in fp32."""
    def score(config: WidthConfig) -> Score:
        if precision == INT8:
            c = quantized.candidate(config, device.int8_activations, input_shape, device.default_opset, None)
            return Score(c.upem, c.target_acc, c.estimate)
        return scorer.score_with_estimate(config)
    return score


def bench_devices(run: BankRun, scorer: TargetScorer, devices: Sequence[str], deploy_dir: Path, out: Path,
                  configs: int, seed: int, int8: Int8Settings | None = None) -> list[Path]:
    """Report (CSV) and plot (PNG) per device of ``configs`` random sub-networks besides the uniform widths
    and the deployed ones of ``deploy_dir``, in every precision the device has a table for (int8 scored as
    quantized with ``int8``, as deploy did); returns the files written. Every table is loaded before any work."""
    from slimda.console import progress_bar
    from slimda.deploy.outputs import REPORT_NAME
    from slimda.deploy.precision import Int8Settings, QuantizedScorer
    from slimda.errors import SlimdaError
    from slimda.latency.table import load_table
    from slimda.model.cost import BankCosts
    from slimda.profilers.devices import get_device

    bank = run.bank
    costs = BankCosts(bank, run.meta.input_chw)
    found = table_precisions(run.run_dir, devices)
    for name in dict.fromkeys(get_device(d).name for d in devices):
        if not any(d == name for d, _ in found):
            raise SlimdaError(f"no latency table for device {name} in {run.run_dir / 'latency'}: build it with "
                              f"`slimda-profile --device {name} --bank {run.run_dir}`")
    tables = {(d, p): load_table(run.run_dir, d, p, bank) for d, p in found}  # all readable, or fail now
    quantized = QuantizedScorer(scorer, int8 or Int8Settings())  # int8 exported and quantized as deploy does
    written = []
    for name in dict.fromkeys(d for d, _ in found):
        device = get_device(name)
        deployments = read_deployments(deploy_dir / REPORT_NAME, name, device.precision)
        deployed = [bank.space.from_id(d["config_id"]) for d in deployments]
        chosen = report_configs(bank.space, configs, seed, deployed)
        rows: list[dict[str, object]] = []
        for (d, precision), table in tables.items():
            if d != name:
                continue
            score = _scoring(scorer, quantized, device, precision, tuple(table.input_shape))
            with progress_bar(len(chosen), f"bench {name} {precision}", "config") as bar:
                rows += device_rows(name, precision, chosen, score, table.predict, costs.flops, costs.params,
                                    bank.space.ratio_of, bar.update)
        written.append(write_device_report(rows, out / f"{name}.csv"))
        title = f"{bank.arch} on {name}: target {scorer.target.name}, head {scorer.head}"
        written.append(plot_device(rows, deployments, out / f"{name}.png", title))
    return written
