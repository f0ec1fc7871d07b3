"""Does the input pipeline keep the training step fed? Images per second of slimda's training loader on
JPEG photos, against the images per second one training step of a bank consumes, on this machine.

The photos are random crops of scikit-learn's sample photos, 300-500 px wide, saved as JPEG (Office-31's
sizes). The pipeline is the real one (``TrainingData.loader``: decode, resize to resolution/0.875 by the
shorter side, random crop, flip, normalise, collate; the batch of source + target images of each step),
timed for workers 0, 1, 2 … up to the cores, with and without ``--cache-images``. The consumer is one
training step (``Trainer.train_step``) of a ResNet-50 and a MobileNetV2 bank (m = 4, source + target batch),
fed a batch made once, so only the model's time counts.

    python benchmarks/input_pipeline.py                                   # CPU: consumers at 96x96
    python benchmarks/input_pipeline.py --device cuda --consumer-resolution 224    # the GPU machine

Target on the 16-core GPU machine: the pipeline supplies at least 1.5x what the step consumes.
Writes benchmarks/results/input_pipeline.csv (one row per measurement) and prints it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from slimda.data.loading import cpu_count
from slimda.data.sample_domains import make_photo_domains
from slimda.tables import print_table, write_csv_atomic
from slimda.train.config import TrainConfig
from slimda.train.data import TrainingData
from slimda.train.trainer import Trainer

RESULTS = Path(__file__).parent / "results"


def pipeline_rate(cfg: TrainConfig, steps: int) -> tuple[float, float]:
    """(images per second over ``steps`` batches after the first, seconds to build the cache if any)."""
    started = time.perf_counter()
    data = TrainingData(cfg, torch.device("cpu"))
    setup = time.perf_counter() - started
    loader = data.loader(0)
    next(loader)  # workers started, first batch made
    started = time.perf_counter()
    for _ in range(steps):
        next(loader)
    seconds = time.perf_counter() - started
    loader.close()
    return steps * data.images_per_step() / seconds, setup


def step_rate(cfg: TrainConfig, run_dir: Path, steps: int) -> tuple[float, str]:
    """(images per second one training step consumes, its autocast dtype): a batch made once, one warm-up."""
    trainer = Trainer(cfg, run_dir, progress=False)
    batch = trainer.batch(0)
    trainer.train_step(0, batch=batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.train_step(step, batch=batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps * trainer.data.images_per_step() / (time.perf_counter() - started)
    return rate, str(trainer.amp_dtype or "off").replace("torch.", "")


def main() -> None:
    cores = cpu_count()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="photos per class and domain (2 classes)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per domain per step")
    parser.add_argument("--resolution", type=int, default=224, help="crop size of the pipeline")
    parser.add_argument("--steps", type=int, default=12, help="batches timed per pipeline setting")
    parser.add_argument("--workers", default=",".join(str(w) for w in sorted({0, 1, 2, *range(4, cores + 1, 4)}
                                                                             | {cores})),
                        help="worker counts to time, comma-separated (default: 0, 1, 2, 4, 8 … up to the cores)")
    parser.add_argument("--consumers", default="resnet50,mobilenet_v2")
    parser.add_argument("--consumer-resolution", type=int, default=None,
                        help="input size of the timed training step (default: 224 on CUDA, 96 on the CPU)")
    parser.add_argument("--consumer-steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(RESULTS / "input_pipeline.csv"))
    args = parser.parse_args()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    consumer_res = args.consumer_resolution or (224 if device.startswith("cuda") else 96)
    machine = f"{platform.node()} {cores} cores" + (f" {torch.cuda.get_device_name()}" if device != "cpu" else "")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source, target = make_photo_domains(Path(tmp) / "photos", per_class=args.images, longer_side=(300, 500))
        base = dict(source=str(source), target=str(target), arch="resnet50", resolution=args.resolution,
                    batch_size=args.batch_size, iters=args.steps + 2)
        for cache in (False, True):
            for workers in [int(w) for w in args.workers.split(",")]:
                rate, setup = pipeline_rate(TrainConfig(**base, workers=workers, cache_images=cache), args.steps)
                rows.append({"machine": machine, "kind": "pipeline", "arch": "", "resolution": args.resolution,
                             "workers": workers, "cache_images": cache, "images_per_s": round(rate, 1),
                             "setup_s": round(setup, 2), "amp": ""})
                print(rows[-1], flush=True)
        for arch in args.consumers.split(","):
            cfg = TrainConfig(**{**base, "arch": arch, "resolution": consumer_res, "iters": 1000}, device=device,
                              workers=0)
            rate, amp = step_rate(cfg, Path(tmp) / f"run-{arch}", args.consumer_steps)
            rows.append({"machine": machine, "kind": "train_step", "arch": arch, "resolution": consumer_res,
                         "workers": "", "cache_images": "", "images_per_s": round(rate, 1), "setup_s": "",
                         "amp": amp})
            print(rows[-1], flush=True)
    best = max(r["images_per_s"] for r in rows if r["kind"] == "pipeline")
    for row in rows:
        row["best_pipeline_vs_this"] = round(best / row["images_per_s"], 2) if row["kind"] == "train_step" else ""
    write_csv_atomic(args.out, rows)
    print_table(rows)


if __name__ == "__main__":
    main()
