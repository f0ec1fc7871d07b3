"""How repeatable a latency measurement is on this machine, per statistic: the noise floor of every table.

For each (arch, resolution) × device: ``--configs`` random sub-networks are exported once and timed
``--rounds`` times in turn (each time a fresh session, ``--min-time`` seconds, as a table build does).
For each statistic of a measurement (min, median, mean, p90) it reports the share of networks whose every
round lies within ±10 % of their median round (``repeatable_pct``) and the mean |round / median − 1|
(``mean_abs_dev_pct``). A statistic that resists a noisy neighbour (the minimum, say) would show it here.

``reference-normalised`` divides each median by that of a fixed reference network (the first one) timed
right after it, times the reference's overall median: how much of the noise is a slowdown of the whole
machine that a reference measured alongside would cancel. ``paired`` times each network against the
reference in alternating ~20 ms chunks (``measure_paired``, what a table build does) and reports
``vs_reference`` × the reference's overall median: the same idea at the time scale of the host's swings.
For ``cpu-onnxruntime`` one more mode, ``round-robin``, times the networks one run each in turn, every
session open at once, for the same time per network: each run then finds the caches holding the other
networks' weights. ``vs_sequential`` is its median latency over the sequential median's.

Writes benchmarks/results/latency_noise.csv (``--name``).

    python benchmarks/latency_noise.py                  # resnet18 64 and 96, digits-cnn 28; ORT, OpenVINO
    python benchmarks/latency_noise.py --cases resnet18:64 --devices cpu-onnxruntime --rounds 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from slimda.console import one_torch_thread
from slimda.export.onnx_export import export_onnx
from slimda.latency.build import default_in_channels
from slimda.model.bank import ModelBank
from slimda.profilers.measurement import MeasureOptions, measure, measure_paired
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results"
STATISTICS = ("min", "p50", "mean", "p90")


def spread(values: np.ndarray) -> tuple[float, float]:
    """(share of rows, i.e. networks, whose every round is within ±10 % of its median, mean |deviation|)."""
    median = np.median(values, axis=1, keepdims=True)
    deviation = np.abs(values / median - 1)
    return float(np.mean(np.all(deviation <= 0.1, axis=1))), float(deviation.mean())


def round_robin(paths: list[Path], threads: int, seconds: float) -> np.ndarray:
    """Median latency (ms) of each model, timed one run each in turn until each has had ``seconds``."""
    import onnxruntime as ort

    from slimda.profilers.backends.ort_cpu import session_options
    from slimda.profilers.onnxinfo import input_specs, random_feed

    sessions = []
    for path in paths:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
        feed = random_feed(input_specs(path, 1, None), 0)
        for _ in range(5):
            session.run(None, feed)
        sessions.append((session, feed))
    runs: list[list[float]] = [[] for _ in paths]
    spent = np.zeros(len(paths))
    while (spent < seconds).any():
        for i, (session, feed) in enumerate(sessions):
            if spent[i] < seconds:
                start = time.perf_counter()
                session.run(None, feed)
                runs[i].append(time.perf_counter() - start)
                spent[i] += runs[i][-1]
    return np.array([1e3 * np.median(r) for r in runs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["resnet18:64", "resnet18:96", "digits-cnn:28"],
                        help="ARCH:RESOLUTION")
    parser.add_argument("--devices", nargs="+", default=["cpu-onnxruntime", "cpu-openvino"])
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds timed per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="latency_noise",
                        help="CSV name in benchmarks/results (default: latency_noise)")
    args = parser.parse_args()
    results = RESULTS / f"{args.name}.csv"
    options = MeasureOptions(threads=args.threads, warmup=5, min_runs=20, min_time_s=args.min_time)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, one_torch_thread():
        for case in args.cases:
            arch, size = case.split(":")
            channels = default_in_channels(arch)
            bank = ModelBank(arch, 10, channels).eval()
            configs = bank.space.sample_many(args.configs, seed=11)
            paths = [export_onnx(bank.extract(c), Path(tmp) / f"{arch}-{size}-{i}.onnx",
                                 (1, channels, int(size), int(size)), opset=17) for i, c in enumerate(configs)]
            for device in args.devices:
                started = time.perf_counter()
                stats, reference, paired, paired_reference = [], [], [], []
                for _ in range(args.rounds):
                    stats.append([])
                    reference.append([])
                    paired.append([])
                    paired_reference.append([])
                    for p in paths:
                        stats[-1].append([getattr(measure(p, device, options).stats, s) for s in STATISTICS])
                        reference[-1].append(measure(paths[0], device, options).stats.p50)
                        pair = measure_paired(p, paths[0], device, options)
                        paired[-1].append(pair.vs_reference)
                        paired_reference[-1].append(pair.reference_ms)
                # rounds × networks (× statistics)
                stats, reference, paired = np.array(stats), np.array(reference), np.array(paired)
                base = {"arch": arch, "input": f"{channels}x{size}x{size}", "device": device,
                        "networks": len(paths), "rounds": args.rounds, "seconds_per_round": args.min_time,
                        "threads": args.threads, "cpu_count": os.cpu_count(),
                        "loadavg_1min": f"{os.getloadavg()[0]:.2f}"}
                sequential = np.median(stats[:, :, STATISTICS.index("p50")], axis=0)
                for k, name in enumerate(STATISTICS):
                    share, dev = spread(stats[:, :, k].T)
                    rows.append({**base, "mode": "sequential", "statistic": name,
                                 "repeatable_pct": round(100 * share, 1), "mean_abs_dev_pct": round(100 * dev, 2),
                                 "median_ms": round(float(np.median(stats[:, :, k])), 4), "vs_sequential": ""})
                # each network over the reference network timed right after it, times the reference's median:
                # what is left if the machine's slowdowns are common to both and last longer than a measurement
                normalised = stats[:, :, STATISTICS.index("p50")] / reference * np.median(reference)
                share, dev = spread(normalised.T)
                rows.append({**base, "mode": "reference-normalised", "statistic": "p50",
                             "repeatable_pct": round(100 * share, 1), "mean_abs_dev_pct": round(100 * dev, 2),
                             "median_ms": round(float(np.median(normalised)), 4), "vs_sequential": ""})
                paired = paired * np.median(paired_reference)
                share, dev = spread(paired.T)
                rows.append({**base, "mode": "paired", "statistic": "p50",
                             "repeatable_pct": round(100 * share, 1), "mean_abs_dev_pct": round(100 * dev, 2),
                             "median_ms": round(float(np.median(paired)), 4),
                             "vs_sequential": round(float(np.median(np.median(paired, 0) / sequential)), 3)})
                if device == "cpu-onnxruntime":
                    robin = np.array([round_robin(paths, args.threads, args.min_time) for _ in range(args.rounds)])
                    share, dev = spread(robin.T)
                    rows.append({**base, "mode": "round-robin", "statistic": "p50",
                                 "repeatable_pct": round(100 * share, 1), "mean_abs_dev_pct": round(100 * dev, 2),
                                 "median_ms": round(float(np.median(robin)), 4),
                                 "vs_sequential": round(float(np.median(np.median(robin, 0) / sequential)), 3)})
                print(f"{arch} {size} {device}: {time.perf_counter() - started:.0f} s", flush=True)
                write_csv_atomic(results, rows)  # partial results survive an interruption
    print_table([{k: r[k] for k in ("arch", "input", "device", "mode", "statistic", "repeatable_pct",
                                    "mean_abs_dev_pct", "median_ms", "vs_sequential")} for r in rows])
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
