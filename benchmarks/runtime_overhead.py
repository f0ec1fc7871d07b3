"""slimda predict against a minimal hand-written loop, and the drift monitor's delay and false alarms.

Overhead (issue 24): per deployment (ONNX Runtime ``.onnx``, OpenVINO IR, ORT ``.ort``; fp32 and int8; a
digits-CNN on 28x28 digits and a MobileNetV2 on 224x224 photos cropped from 300-420 px JPEGs) and batch (1
and 32), ``slimda predict``'s own per-image code (``slimda.runtime.reports.classify``: recipe, batching,
softmax, a row per image, then the CSV text; ``--top-k 1``) against a minimal loop doing the same work by hand
(PIL decode and resize, NumPy crop and normalisation, the runtime's run call, softmax, then file, class and
probability written as CSV), both on the same files, the same model file and the same runtime threads, rounds
alternating which side goes first so the host's drift falls on both. Model loading is outside both timings.
The minimal loop's stage timers give the shares of decoding, preprocessing and inference (slimda's recipe
decodes and preprocesses in one call). Every deployment exports a dynamic batch, so batch 32 runs 32 images
per call.

Monitor: a digits bank trained with a source split, deployed with its estimate, watches streams of the target
(20 windows of each ``--windows`` size, seeds permuting the images) and streams whose second half switches to
another domain or corruption (inverted, noise, MNIST, MNIST digits over photos): false-alarm rate and
detection delay in windows, per shift and seed. Probabilities are computed once per image through
``slimda.runtime`` and fed to ``Monitor`` as ``slimda predict --monitor`` feeds them.

    python benchmarks/runtime_overhead.py [--work DIR] [--rounds 6] [--images 256] [--seeds 5] [--windows 50,200]

Writes ``benchmarks/results/runtime_overhead.csv`` (one row per deployment, batch, round and side),
``runtime_overhead_summary.csv`` and ``runtime_monitor.csv``. Banks and deployments are kept in ``--work``
and reused by a rerun.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ARTEFACTS = (("cpu-onnxruntime", "onnx"), ("cpu-openvino", "openvino-ir"), ("ort-mobile", "ort"))
SHIFTS = ("none", "inverted", "noise", "mnist", "mnist-photo")


def cli(*argv: str) -> None:
    from slimda.cli import main

    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"slimda {' '.join(argv)} exited {code}")


def prepare(work: Path) -> dict[str, dict[str, Path]]:
    """Two banks (short training: speed, not accuracy, is measured here, except by the monitor) and their
    deployments, fp32 and int8, to the three CPU runtimes. Returns {dataset: {"images", "deploy", ...}}."""
    from slimda.data.sample_domains import make_digit_domains, make_photo_domains

    digits = make_digit_domains(work / "digits")
    photo_source, photo_target = make_photo_domains(work / "photos", per_class=64)
    setups = {
        "digits": dict(train=["--iters", "600", "--source-val", "0.1"], source="mnist", target=digits["digits"]),
        "photos": dict(train=["--arch", "mobilenet_v2", "--iters", "4", "--batch-size", "4", "--model-batch", "2"],
                       source=str(photo_source), target=photo_target),
    }
    out = {}
    for name, s in setups.items():
        run = work / f"{name}-run"
        if not (run / "bank.pt").is_file():
            cli("train", "--source", s["source"], "--target", str(s["target"]), *s["train"], "--out", str(run))
        devices = ",".join(d for d, _ in ARTEFACTS)
        common = ["--bank", str(run), "--target", str(s["target"]), "--device", devices, "--flops", "10G",
                  "--no-measure", "--dynamic-batch", "--population", "4", "--generations", "1",
                  "--calibration-images", "64"]
        for precision in ("fp32", "int8"):
            folder = work / f"{name}-{precision}"
            if not (folder / "cpu-onnxruntime" / "manifest.json").is_file():
                extra = ["--int8-images", "32", "--score-images", "64"] if precision == "int8" else []
                cli("deploy", *common, "--precision", precision, *extra, "--out", str(folder))
        out[name] = {"images": Path(s["target"]), "run": run, "fp32": work / f"{name}-fp32",
                     "int8": work / f"{name}-int8"}
    return out


class MinimalLoop:
    """What a user would write by hand from the manifest: PIL decode and resize, NumPy crop and normalisation,
    one run call per batch, softmax, and a CSV line (file, class, probability) per image. Stage times per batch
    (the CSV line counts as inference's)."""

    def __init__(self, folder: Path, threads: int) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        steps = {s["op"]: s for s in manifest["preprocess"]}
        self.mode = steps["decode"]["color"]
        self.size = steps["resize"].get("size_hw")
        self.shorter = steps["resize"].get("shorter_side")
        self.crop = steps.get("center_crop", {}).get("size_hw")
        self.names = manifest["class_names"]
        self.log_probs = str(manifest.get("output", "logits")).startswith("log-prob")
        self.mean = np.asarray(steps["normalize"]["mean"], np.float32)
        self.std = np.asarray(steps["normalize"]["std"], np.float32)
        path = folder / manifest["artifact"]["file"]
        if manifest["artifact"]["kind"] == "openvino-ir":
            import openvino as ov

            config = {"INFERENCE_NUM_THREADS": threads}
            if manifest["precision"] == "fp32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            compiled = ov.Core().compile_model(str(path), "CPU", config)
            self.run = lambda x: compiled(x)[compiled.outputs[0]]
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self.run = lambda x: session.run(None, {name: x})[0]

    def classify(self, files: list[Path], batch: int) -> tuple[list[str], list[tuple[float, float, float, int]]]:
        import csv

        from PIL import Image

        top, stages = [], []
        out = csv.writer(io.StringIO())
        out.writerow(["file", "class", "probability"])
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            t0 = time.perf_counter()
            images = [Image.open(f).convert(self.mode) for f in chunk]
            t1 = time.perf_counter()
            arrays = []
            for image in images:
                if self.size:
                    h, w = self.size
                elif image.height <= image.width:  # shorter side to self.shorter, as torchvision's Resize(int)
                    h, w = self.shorter, int(self.shorter * image.width / image.height)
                else:
                    h, w = int(self.shorter * image.height / image.width), self.shorter
                image = image.resize((w, h), Image.BILINEAR)
                a = np.asarray(image, np.float32) * np.float32(1 / 255)
                if self.crop:
                    ch, cw = self.crop
                    top_, left = round((h - ch) / 2), round((w - cw) / 2)
                    a = a[top_:top_ + ch, left:left + cw]
                a = (a.reshape(a.shape[0], a.shape[1], -1) - self.mean) / self.std
                arrays.append(a.transpose(2, 0, 1))
            x = np.ascontiguousarray(np.stack(arrays), np.float32)
            t2 = time.perf_counter()
            scores = np.asarray(self.run(x), np.float64)
            probs = np.exp(scores) if self.log_probs else np.exp(scores - scores.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            for f, p in zip(chunk, probs):
                k = int(p.argmax())
                top.append(self.names[k])
                out.writerow([str(f), self.names[k], round(float(p[k]), 6)])
            t3 = time.perf_counter()
            stages.append((t1 - t0, t2 - t1, t3 - t2, len(chunk)))
        return top, stages


def slimda_side(predictor, files: list[Path], batch: int) -> tuple[list[str], float]:
    """slimda predict's per-image work (classify, then the CSV text); seconds."""
    from slimda.runtime.predictor import Timings
    from slimda.runtime.reports import classify
    from slimda.tables import print_table

    predictor.timings = Timings()
    started = time.perf_counter()
    rows, failed = classify(predictor, files, batch, 1)
    print_table(rows, csv_format=True, file=io.StringIO())
    seconds = time.perf_counter() - started
    assert failed == 0
    return [r["class"] for r in rows], seconds


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def overhead(setups: dict, rounds: int, images: int, threads: int, batches: tuple[int, ...]) -> list[dict]:
    from slimda.runtime import load

    rows = []
    for dataset, s in setups.items():
        files = sorted(p for p in s["images"].rglob("*") if p.suffix in (".png", ".jpg"))
        files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:images]]
        for precision in ("fp32", "int8"):
            for device, kind in ARTEFACTS:
                folder = s[precision] / device
                if not (folder / "manifest.json").is_file():
                    print(f"skip {dataset} {precision} {device}: not deployed")
                    continue
                predictor, minimal = load(folder, threads=threads), MinimalLoop(folder, threads)
                for batch in batches:
                    # warm-up both, and check they answer alike
                    ours, _ = slimda_side(predictor, files[:batch * 2], batch)
                    theirs, _ = minimal.classify(files[:batch * 2], batch)
                    agree = float(np.mean([a == b for a, b in zip(ours, theirs)]))
                    for r in range(rounds):
                        order = ("slimda", "minimal") if r % 2 == 0 else ("minimal", "slimda")
                        for side in order:
                            if side == "slimda":
                                _, seconds = slimda_side(predictor, files, batch)
                                t = predictor.timings
                                per_image = [(p + i) / n for p, i, n in zip(t.preprocess, t.inference, t.images)]
                                decode, prep, infer = float("nan"), sum(t.preprocess), sum(t.inference)
                            else:
                                started = time.perf_counter()
                                _, stages = minimal.classify(files, batch)
                                seconds = time.perf_counter() - started
                                per_image = [(d + p + i) / n for d, p, i, n in stages]
                                decode, prep, infer = (sum(x[k] for x in stages) for k in range(3))
                            rows.append({
                                "dataset": dataset, "precision": precision, "artefact": kind, "device": device,
                                "batch": batch, "round": r, "side": side, "images": len(files),
                                "threads": threads, "ms_per_image": round(1e3 * seconds / len(files), 5),
                                "images_per_s": round(len(files) / seconds, 2),
                                "p50_ms": round(1e3 * percentile(per_image, 50), 5),
                                "p90_ms": round(1e3 * percentile(per_image, 90), 5),
                                "decode_share": round(decode / seconds, 4) if decode == decode else "",
                                "preprocess_share": round(prep / seconds, 4),
                                "inference_share": round(infer / seconds, 4),
                                "top1_agreement": agree})
                    last = [x for x in rows if x["dataset"] == dataset and x["precision"] == precision
                            and x["device"] == device and x["batch"] == batch]
                    ratio = summary_ratio(last)
                    print(f"{dataset:6s} {precision} {kind:11s} batch {batch:2d}: slimda/minimal {ratio:.3f}",
                          flush=True)
    return rows


def summary_ratio(rows: list[dict]) -> float:
    """Median over rounds of slimda's time per image over the minimal loop's in the same round."""
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["side"]] = r["ms_per_image"]
    return statistics.median(v["slimda"] / v["minimal"] for v in by_round.values())


def summarise(rows: list[dict]) -> list[dict]:
    keys = sorted({(r["dataset"], r["precision"], r["artefact"], r["batch"]) for r in rows},
                  key=lambda k: (k[0], k[1], k[2], k[3]))
    out = []
    for key in keys:
        group = [r for r in rows if (r["dataset"], r["precision"], r["artefact"], r["batch"]) == key]
        ours = [r for r in group if r["side"] == "slimda"]
        theirs = [r for r in group if r["side"] == "minimal"]

        def med(side: list[dict], field: str) -> float:
            return round(statistics.median(float(r[field]) for r in side), 4)

        ratio = summary_ratio(group)
        out.append({"dataset": key[0], "precision": key[1], "artefact": key[2], "batch": key[3],
                    "rounds": len(ours), "slimda_images_per_s": med(ours, "images_per_s"),
                    "minimal_images_per_s": med(theirs, "images_per_s"),
                    "slimda_p50_ms": med(ours, "p50_ms"), "slimda_p90_ms": med(ours, "p90_ms"),
                    "minimal_p50_ms": med(theirs, "p50_ms"), "minimal_p90_ms": med(theirs, "p90_ms"),
                    "ratio_slimda_over_minimal": round(ratio, 4), "target_1.1_met": ratio <= 1.1,
                    "minimal_decode_share": med(theirs, "decode_share"),
                    "minimal_preprocess_share": med(theirs, "preprocess_share"),
                    "minimal_inference_share": med(theirs, "inference_share"),
                    "slimda_preprocess_share": med(ours, "preprocess_share"),
                    "slimda_inference_share": med(ours, "inference_share"),
                    "top1_agreement": ours[0]["top1_agreement"]})
    return out


def shifted_images(work: Path, digits_images: Path, shift: str) -> list[Path]:
    """The images a stream switches to: the target corrupted, or another domain's digits."""
    from PIL import Image, ImageOps

    if shift in ("mnist", "mnist-photo"):
        folder = work / "digits" / ("mnist" if shift == "mnist" else "mnist-b-photo")
        return sorted(folder.rglob("*.png"))
    folder = work / f"shift-{shift}"
    if not folder.is_dir():
        part = folder.with_name(folder.name + ".partial")
        part.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i, path in enumerate(sorted(digits_images.rglob("*.png"))):
            image = Image.open(path).convert("L")
            if shift == "inverted":
                image = ImageOps.invert(image)
            else:  # Gaussian noise, sigma 40 grey levels: a dirty lens or a failing sensor
                noisy = np.asarray(image, np.float32) + rng.normal(0, 40, (image.height, image.width))
                image = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
            image.save(part / f"{i:05d}.png")
        part.rename(folder)
    return sorted(folder.glob("*.png"))


def draw(pool: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` rows of ``pool`` in random order: each row once, then again in another order, and so on."""
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-size // len(pool)))])[:size]
    return pool[order]


def monitor_runs(work: Path, setups: dict, seeds: int, window: int, threads: int) -> list[dict]:
    from slimda.runtime import load
    from slimda.runtime.monitor import Monitor

    folder = setups["digits"]["fp32"] / "cpu-onnxruntime"
    predictor = load(folder, threads=threads)
    if not predictor.manifest.get("estimated_target_accuracy"):
        raise SystemExit(f"{folder} has no estimate: the monitor needs a bank trained with a source split")

    def probabilities(files: list[Path]) -> np.ndarray:
        return predictor.probabilities(np.stack([predictor.recipe(f) for f in files]))

    target_files = sorted(setups["digits"]["images"].rglob("*.png"))
    target = probabilities(target_files)
    pools = {shift: probabilities(shifted_images(work, setups["digits"]["images"], shift))
             for shift in SHIFTS if shift != "none"}
    windows, switch = 20, 10
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for shift in SHIFTS:
            stream = draw(target, windows * window, rng)  # the target's images, repeated only when too few
            if shift != "none":
                stream[switch * window:] = draw(pools[shift], (windows - switch) * window, rng)
            monitor = Monitor(predictor.manifest, predictor.class_names, window)
            for i, probs in enumerate(stream):
                monitor.add(Path(f"{i:05d}.png"), probs)
            monitor.finish()
            alerts = [w.index for w in monitor.windows if w.alert]
            before = [i for i in alerts if i < (switch if shift != "none" else windows)]
            after = [i for i in alerts if shift != "none" and i >= switch]
            rows.append({"seed": seed, "shift": shift, "window": window, "windows": len(monitor.windows),
                         "switch_window": switch if shift != "none" else "",
                         "false_alarms": len(before),
                         "false_alarm_windows": switch if shift != "none" else windows,
                         "detected": bool(after) if shift != "none" else "",
                         "delay_windows": (after[0] - switch) if after else "",
                         "alerts_after_switch": len(after) if shift != "none" else "",
                         "alert_windows": ";".join(map(str, alerts))})
            print(f"monitor window {window} seed {seed} {shift:11s}: alerts at {alerts}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/slimda-runtime-overhead"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="runtime threads on both sides (default: 1)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--windows", default="50,200", help="monitor window sizes, comma-separated")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()

    from slimda.tables import write_csv_atomic

    args.work.mkdir(parents=True, exist_ok=True)
    setups = prepare(args.work)
    try:
        import torch

        torch.set_num_threads(1)  # idle now: keep its pool from competing with the timed runtimes
    except ImportError:
        pass
    RESULTS.mkdir(exist_ok=True)
    if not args.skip_overhead:
        rows = overhead(setups, args.rounds, args.images, args.threads, (1, 32))
        write_csv_atomic(RESULTS / "runtime_overhead.csv", rows)
        summary = summarise(rows)
        write_csv_atomic(RESULTS / "runtime_overhead_summary.csv", summary)
        for s in summary:
            print(s)
    monitor = [row for size in args.windows.split(",")
               for row in monitor_runs(args.work, setups, args.seeds, int(size), args.threads)]
    write_csv_atomic(RESULTS / "runtime_monitor.csv", monitor)


if __name__ == "__main__":
    main()
