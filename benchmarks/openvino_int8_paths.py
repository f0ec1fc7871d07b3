"""Two ways to an int8 model on OpenVINO: the QDQ ONNX model slimda deploys (ONNX Runtime's quantization
tools; OpenVINO reads its Q/DQ pairs as FakeQuantize), or NNCF's post-training quantization of the fp32 IR
(``nncf.quantize``, the tool OpenVINO documents), calibrated on the same target images. Which is faster on
the device, and which keeps the fp32 network's predictions?

For the sub-networks of a trained bank (the uniform widths and random ones): the fp32 export and its QDQ
model come from the int8 scorer ``slimda deploy`` uses (percentile on 64 calibration images by default, uint8
activations as on cpu-openvino); NNCF quantizes the fp32 model read by OpenVINO with ``preset=MIXED``
(symmetric weights, asymmetric activations: the same formats) on the same calibration images. All three run
in OpenVINO's CPU plugin (f32 hint, 1 thread): top-1 agreement with fp32 and target accuracy on the scored
images (labels read for this report only), and latency timed *paired* (NNCF's model against the QDQ model
in alternating chunks, then the QDQ model against fp32). ``--archs`` adds untrained ImageNet backbones at a
reduced resolution, timed only (their accuracy means nothing).
Writes benchmarks/results/openvino_int8_paths.csv and prints a summary.

    pip install nncf                                   # not a slimda dependency: this benchmark only
    slimda quickstart --out /tmp/qs
    python benchmarks/openvino_int8_paths.py --bank /tmp/qs/run --archs resnet18,mobilenet_v2
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from slimda.deploy.precision import FP32_NAME, Int8Settings, QuantizedScorer
from slimda.deploy.setup import BankRun, TargetScoring
from slimda.profilers.backends.openvino_cpu import compile_config
from slimda.profilers.config import MeasureOptions
from slimda.profilers.stats import paired_runs
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results"


class Compiled:
    """An OpenVINO model compiled as the cpu-openvino profile does (1 thread, latency hint)."""

    def __init__(self, model, precision: str, shape: tuple[int, ...]) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(model if not isinstance(model, Path) else core.read_model(str(model)),
                                           "CPU", compile_config(precision, 1))
        self.request = self.compiled.create_infer_request()
        self.request.set_input_tensor(ov.Tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32)))

    def run(self) -> None:
        self.request.infer()

    def logits(self, images: np.ndarray) -> np.ndarray:
        request = self.compiled.create_infer_request()
        return np.concatenate([request.infer({0: images[i:i + 1]})[0] for i in range(len(images))])


def nncf_quantize(fp32_onnx: Path, calibration: list[np.ndarray], out: Path) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_onnx))
    quantized = nncf.quantize(model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(calibration))
    ov.save_model(quantized, str(out))
    return out


def ratio(a: Compiled, b: Compiled, opts: MeasureOptions) -> float:
    """Median of a's time over b's, in alternating chunks."""
    return paired_runs(a.run, b.run, opts.limits()).ratio


def bank_rows(args, opts: MeasureOptions) -> list[dict[str, object]]:
    run = BankRun.open(args.bank)
    space = run.bank.space
    scorer = run.scorer(TargetScoring(args.target, calibration_images=512, score_images=args.score_images))
    quantized = QuantizedScorer(scorer, Int8Settings())
    images = quantized.scored_images()
    labels = scorer.target.labels.numpy() if scorer.target.labels is not None else None
    calibration = [scorer.target.dataset[i][0][None].numpy().astype(np.float32)
                   for i in quantized.calibration_indices()]
    configs = list(dict.fromkeys([*(space.uniform(r) for r in space.ratios), space.largest()]))
    configs += space.sample_many(max(args.configs - len(configs), 0), 0, exclude=configs)
    shape = (1, *run.meta.input_chw)
    rows = []
    for i, config in enumerate(configs):
        c = quantized.candidate(config, "uint8", shape, 17, None)
        nncf_xml = nncf_quantize(c.files / FP32_NAME, calibration, c.files / "nncf.xml")
        models = {"fp32": Compiled(c.files / FP32_NAME, "fp32", shape),
                  "qdq": Compiled(c.files / "model.onnx", "int8", shape),
                  "nncf": Compiled(nncf_xml, "int8", shape)}
        top1 = {k: m.logits(images).argmax(1) for k, m in models.items()}
        row = {"case": "bank", "arch": run.bank.arch, "resolution": shape[-1], "config_id": config.id,
               "width": round(space.ratio_of(config), 4),
               "nncf_vs_qdq": round(ratio(models["nncf"], models["qdq"], opts), 4),
               "qdq_vs_fp32": round(ratio(models["qdq"], models["fp32"], opts), 4)}
        for k in ("qdq", "nncf"):
            row[f"{k}_agreement"] = round(float((top1[k] == top1["fp32"]).mean()), 5)
        if labels is not None:
            for k in ("fp32", "qdq", "nncf"):
                row[f"{k}_acc"] = round(float((top1[k] == labels).mean()), 5)
        rows.append(row)
        print(f"{i + 1}/{len(configs)} {row}", flush=True)
    return rows


def arch_rows(archs: list[str], resolution: int, opts: MeasureOptions) -> list[dict[str, object]]:
    """Uniform widths of untrained backbones: latency only."""
    from precision_speedup import WIDTHS, calibration_data

    from slimda.export.onnx_export import export_onnx
    from slimda.export.quantize import TargetCalibrationReader, quantize_qdq
    from slimda.model.bank import ModelBank
    from slimda.model.bn import recalibrate

    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for arch in archs:
            dataset, prep = calibration_data(arch, resolution, tmp)
            bank = ModelBank(arch, 10, prep.channels).eval()
            images = [dataset[i][0][None] for i in range(min(len(dataset), 64))]
            shape = (1, prep.channels, *prep.size)
            for width in WIDTHS:
                net = bank.extract(bank.space.uniform(width))
                recalibrate(net, [torch.cat(images)])
                fp32 = export_onnx(net.eval(), tmp / f"{arch}-{width}.onnx", shape)
                qdq = tmp / f"{arch}-{width}.qdq.onnx"
                quantize_qdq(fp32, qdq, TargetCalibrationReader(dataset, list(range(len(images)))), "percentile",
                             activations="uint8")
                xml = nncf_quantize(fp32, [x.numpy() for x in images], tmp / f"{arch}-{width}.nncf.xml")
                m = {"fp32": Compiled(fp32, "fp32", shape), "qdq": Compiled(qdq, "int8", shape),
                     "nncf": Compiled(xml, "int8", shape)}
                rows.append({"case": "untrained", "arch": arch, "resolution": resolution, "config_id": "",
                             "width": width, "nncf_vs_qdq": round(ratio(m["nncf"], m["qdq"], opts), 4),
                             "qdq_vs_fp32": round(ratio(m["qdq"], m["fp32"], opts), 4)})
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", help="trained run (accuracy and latency of its sub-networks)")
    parser.add_argument("--target", default="digits", help="target images of the bank (labelled, for the report)")
    parser.add_argument("--configs", type=int, default=12, help="sub-networks of the bank")
    parser.add_argument("--score-images", type=int, default=1024)
    parser.add_argument("--archs", default="", help="untrained backbones timed at --resolution (comma list)")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of each paired measurement")
    parser.add_argument("--out", default=str(RESULTS / "openvino_int8_paths.csv"))
    args = parser.parse_args()
    torch.manual_seed(0)
    opts = MeasureOptions(warmup=5, min_runs=50, min_time_s=args.min_time)
    rows = bank_rows(args, opts) if args.bank else []
    if args.archs:
        rows += arch_rows(args.archs.split(","), args.resolution, opts)
    if not rows:
        raise SystemExit("nothing to measure: give --bank and/or --archs")
    for r in rows:
        r["machine"] = f"{platform.node()} openvino"
    write_csv_atomic(args.out, rows)
    summary = []
    for case in dict.fromkeys((r["case"], r["arch"]) for r in rows):
        mine = [r for r in rows if (r["case"], r["arch"]) == case]
        s = {"case": case[0], "arch": case[1], "networks": len(mine),
             "nncf_vs_qdq_median": round(float(np.median([r["nncf_vs_qdq"] for r in mine])), 3),
             "nncf_vs_qdq_min": min(r["nncf_vs_qdq"] for r in mine),
             "nncf_vs_qdq_max": max(r["nncf_vs_qdq"] for r in mine),
             "qdq_vs_fp32_median": round(float(np.median([r["qdq_vs_fp32"] for r in mine])), 3)}
        for k in ("qdq_agreement", "nncf_agreement", "fp32_acc", "qdq_acc", "nncf_acc"):
            if k in mine[0]:
                s[f"{k}_mean"] = round(float(np.mean([r[k] for r in mine])), 4)
        summary.append(s)
    print_table(summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
