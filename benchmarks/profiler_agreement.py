"""Our OpenVINO profiler against OpenVINO's own ``benchmark_app``: same model, same settings, medians.

For each model the two tools alternate for several rounds, taking turns at going first (the machine is shared
and its speed wanders by tens of percent within seconds). Each round gives one ratio ours / benchmark_app from
two timings seconds apart; the row reports the median of those ratios, and each side's median for scale.
Settings on both sides: CPU, f32 inference precision, one stream, fixed threads, synchronous requests,
random inputs.
Writes benchmarks/results/profiler_agreement.csv.

    python benchmarks/profiler_agreement.py [--threads 1] [--seconds 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from slimda.export.onnx_export import export_onnx
from slimda.model.bank import ModelBank
from slimda.profilers.measurement import MeasureOptions, measure
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results" / "profiler_agreement.csv"
BENCHMARK_APP = Path(sys.executable).with_name("benchmark_app")
# (name, arch, input channels, width ratio, resolution)
MODELS = (
    ("digits-cnn full", "digits-cnn", 1, 1.0, 28),
    ("resnet18 0.5x", "resnet18", 3, 0.5, 64),
    ("mobilenet_v2 0.5x", "mobilenet_v2", 3, 0.5, 64),
    ("resnet18 full", "resnet18", 3, 1.0, 96),
)
_MEDIAN = re.compile(r"Median:\s*([0-9.]+)\s*(ms|us)")


def benchmark_app_median(model: Path, threads: int, seconds: float) -> float:
    """benchmark_app's median latency in ms (its "Median:" line, in us or ms)."""
    cmd = [str(BENCHMARK_APP), "-m", str(model), "-d", "CPU", "-hint", "none", "-nstreams", "1",
           "-nthreads", str(threads), "-infer_precision", "f32", "-api", "sync", "-t", f"{seconds:g}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + 4 * seconds, check=False)
    match = _MEDIAN.search(done.stdout)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"benchmark_app failed ({done.returncode}): {(done.stdout + done.stderr)[-800:]}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "us" else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=2, help="timed seconds per tool and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import openvino as ov

    options = MeasureOptions(threads=args.threads, precision="fp32", warmup=20, min_runs=50,
                             min_time_s=args.seconds, max_time_s=10 * args.seconds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch, channels, ratio, size in MODELS:
            bank = ModelBank(arch, 10, channels).eval()
            config = bank.space.uniform(ratio)
            path = export_onnx(bank.extract(config), Path(tmp) / f"{arch}.onnx", (1, channels, size, size), 17)
            ours, theirs = [], []
            for round_ in range(args.rounds):
                if round_ % 2:
                    theirs.append(benchmark_app_median(path, args.threads, args.seconds))
                m = measure(path, "cpu-openvino", options)
                assert m.precision == "fp32", m.precision
                ours.append(m.stats.p50)
                if not round_ % 2:
                    theirs.append(benchmark_app_median(path, args.threads, args.seconds))
            ours_ms, theirs_ms = statistics.median(ours), statistics.median(theirs)
            ratio = statistics.median(a / b for a, b in zip(ours, theirs))
            rows.append({
                "model": name, "config_id": config.id, "input": f"1x{channels}x{size}x{size}",
                "threads": args.threads, "precision": "fp32", "rounds": args.rounds,
                "ours_latency_ms_p50": round(ours_ms, 4), "benchmark_app_latency_ms_median": round(theirs_ms, 4),
                "ratio": round(ratio, 4), "within_10pct": abs(ratio - 1) <= 0.10,
                "ratio_of_medians": round(ours_ms / theirs_ms, 4),
                "ours_rounds_ms": " ".join(f"{v:.4f}" for v in ours),
                "benchmark_app_rounds_ms": " ".join(f"{v:.4f}" for v in theirs),
                "openvino_version": ov.get_version(), "machine": platform.node(),
                "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
            })
            print(f"{name}: ours {ours_ms:.4f} ms, benchmark_app {theirs_ms:.4f} ms, ratio {ratio:.3f}",
                  file=sys.stderr)
    write_csv_atomic(RESULTS, rows)
    print_table([{k: r[k] for k in ("model", "input", "ours_latency_ms_p50", "benchmark_app_latency_ms_median",
                                    "ratio", "within_10pct")} for r in rows])
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
