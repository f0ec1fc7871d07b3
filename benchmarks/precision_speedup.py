"""INT8 (and bf16) against fp32 on this CPU: the latency of the uniform widths of a bank, quantized (static QDQ, ONNX
Runtime's tools, per-channel int8 weights, calibrated on real images) and not, timed *paired* (int8 and its fp32
twin in alternating ~20 ms chunks, so the host's wandering speed cancels) on cpu-onnxruntime and cpu-openvino,
for both activation formats: int8 symmetric (what TensorRT requires) and uint8 asymmetric.

    python benchmarks/precision_speedup.py                      # digits-cnn 28x28, resnet18 / mobilenet_v2 at 96

Banks are untrained (BN statistics randomised): latency does not depend on the weights' values. Calibration
images: scikit-learn's digits for digits-cnn, crops of the sample photos for the others. bf16: on devices whose
profile lists it (cpu-openvino, where the CPU reports bf16), the fp32 export compiled with the bf16 precision
hint, timed paired against the same file compiled in f32.
On this 2-core AMD EPYC (AVX-512 VNNI), ONNX Runtime's int8 kernels were slower than fp32 with int8
activations and up to ~4x faster with uint8 ones: hence the two rows per width.
Writes benchmarks/results/precision_speedup.csv and prints it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from slimda.data.domains import harmonise, load_domain
from slimda.data.loading import cpu_count
from slimda.data.sample_domains import make_photo_domains
from slimda.export.onnx_export import export_onnx
from slimda.export.quantize import ACTIVATIONS, TargetCalibrationReader, quantize_qdq
from slimda.model.bank import ModelBank
from slimda.model.bn import recalibrate
from slimda.profilers.backends import local_backend
from slimda.profilers.devices import get_device
from slimda.profilers.measurement import MeasureOptions, measure_paired
from slimda.profilers.stats import compute_stats, paired_runs
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results"
WIDTHS = (0.25, 0.5, 0.75, 1.0)


def calibration_data(arch: str, resolution: int, tmp: Path):
    """(dataset read with the bank's preprocessing, its channel count) for ``arch``."""
    if arch == "digits-cnn":
        digits = load_domain("digits")
        prep = harmonise(load_domain("mnist"), digits)
        return digits.dataset(prep), prep
    source, target = make_photo_domains(tmp / "photos", per_class=16)
    src, tgt = load_domain(str(source)), load_domain(str(target))
    prep = harmonise(src, tgt, resolution)
    return tgt.dataset(prep), prep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="digits-cnn,resnet18,mobilenet_v2")
    parser.add_argument("--resolution", type=int, default=96, help="input size of the ImageNet backbones")
    parser.add_argument("--devices", default="cpu-onnxruntime,cpu-openvino")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds each paired measurement runs")
    parser.add_argument("--out", default=str(RESULTS / "precision_speedup.csv"))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    opts = MeasureOptions(warmup=5, min_runs=50, min_time_s=args.min_time)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for arch in args.archs.split(","):
            dataset, prep = calibration_data(arch, args.resolution, tmp)
            bank = ModelBank(arch, 10, prep.channels).eval()
            images = [dataset[i][0][None] for i in range(min(len(dataset), args.calibration_images))]
            for width in WIDTHS:
                net = bank.extract(bank.space.uniform(width))
                recalibrate(net, [torch.cat(images)])  # BN statistics of real images, as deployed
                fp32 = export_onnx(net.eval(), tmp / f"{arch}-{width}.onnx", (1, prep.channels, *prep.size))
                for activations in ACTIVATIONS:
                    reader = TargetCalibrationReader(dataset, list(range(len(images))))
                    int8 = tmp / f"{arch}-{width}.{activations}.onnx"
                    quantize_qdq(fp32, int8, reader, activations=activations)
                    for device in args.devices.split(","):
                        rows.append(speedup_row(int8, fp32, device, opts, arch, prep.size[0], width, activations))
                        print(rows[-1], flush=True)
                for device in args.devices.split(","):
                    if "bf16" in get_device(device).precisions:
                        rows.append(bf16_row(fp32, device, opts, arch, prep.size[0], width))
                        print(rows[-1], flush=True)
    write_csv_atomic(args.out, rows)
    print_table(rows)


def speedup_row(int8: Path, fp32: Path, device: str, opts: MeasureOptions, arch: str, resolution: int,
                width: float, activations: str) -> dict:
    paired = measure_paired(int8, fp32, device, opts)
    return {"machine": f"{platform.node()} {cpu_count()} cores", "arch": arch, "resolution": resolution,
            "width": width, "device": device, "activations": activations,
            "precision": "int8", "fp32_ms": round(paired.reference_ms, 4),
            "ms": round(paired.reference_ms * paired.vs_reference, 4), "vs_fp32": round(paired.vs_reference, 3),
            "speedup": round(1 / paired.vs_reference, 2), "precision_recorded": paired.measurement.precision}


def bf16_row(fp32: Path, device: str, opts: MeasureOptions, arch: str, resolution: int, width: float) -> dict:
    """The same fp32 model compiled with the bf16 hint against itself in f32, in alternating chunks (one
    paired measurement applies one precision to both models, so the two are opened here)."""
    dev = get_device(device)
    backend = local_backend(dev)
    bf16 = backend.open_local(fp32, dev, replace(opts, precision="bf16"))
    f32 = backend.open_local(fp32, dev, replace(opts, precision="fp32"))
    runs = paired_runs(bf16.run, f32.run, opts.limits())
    fp32_ms = compute_stats(runs.reference).p50
    return {"machine": f"{platform.node()} {cpu_count()} cores", "arch": arch, "resolution": resolution,
            "width": width, "device": device, "activations": "", "precision": "bf16", "fp32_ms": round(fp32_ms, 4),
            "ms": round(fp32_ms * runs.ratio, 4), "vs_fp32": round(runs.ratio, 3), "speedup": round(1 / runs.ratio, 2),
            "precision_recorded": bf16.setup["precision"]}


if __name__ == "__main__":
    main()
