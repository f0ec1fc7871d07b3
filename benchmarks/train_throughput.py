"""Training throughput: the price of slimmability, mixed precision, memory, determinism and a shared host.

1. ``bank``: for ResNet-50 and MobileNetV2 banks (m = 4, B source + B target images): seconds per step,
   images per second, and the ratio of the bank's step to the summed steps of the same four sub-networks
   trained as plain torchvision-style networks (extracted: ordinary Conv2d/BatchNorm, one forward over the
   same images, cross-entropy, SGD) - the price of slimmability, target <= 1.15 - with AMP off and on
   (bf16 on CUDA GPUs that have it; CPU autocast bf16 on the CPU). Bank and plain steps alternate, so the
   ratio is measured under the same load. Memory: on CUDA the peak allocated around one step, for
   ``--backward joint`` and ``per-model``; on the CPU the bytes autograd saves for the backward pass (every
   model's graph at once for joint, the largest single model for per-model), plus weights, gradients and
   momentum.
2. ``deterministic`` (CUDA only): a bank step with ``--deterministic`` against without.
3. ``shared_host``: steps per minute of the default training (digits-cnn, mnist -> digits) alone and beside
   a second identical training, at torch's default threads (every core) and at slimda's default (half).

    python benchmarks/train_throughput.py                        # CPU: 96x96, a few steps
    python benchmarks/train_throughput.py --device cuda --resolution 224 --steps 10    # the GPU machine

Writes benchmarks/results/train_throughput.csv (one row per measurement) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from slimda.data.loading import cpu_count, default_threads
from slimda.data.sample_domains import make_photo_domains
from slimda.tables import print_table, write_csv_atomic
from slimda.train.config import TrainConfig
from slimda.train.trainer import Trainer, sandwich_configs

RESULTS = Path(__file__).parent / "results"


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    synchronise(device)
    started = time.perf_counter()
    fn()
    synchronise(device)
    return time.perf_counter() - started


class PlainNets:
    """The model batch's sub-networks as plain extracted networks, each with its own SGD, trained on the same
    source + target images (cross-entropy on the source): what the same widths cost without a bank."""

    def __init__(self, trainer: Trainer, step: int) -> None:
        self.trainer = trainer
        configs = sandwich_configs(trainer.bank, step, trainer.cfg.seed, trainer.cfg.model_batch)
        self.nets = [trainer.bank.extract(c).to(trainer.device, memory_format=trainer.memory_format).train()
                     for c in configs]
        self.optimizers = [torch.optim.SGD(n.parameters(), lr=1e-3, momentum=0.9) for n in self.nets]

    def step(self, batch) -> None:
        images = torch.cat([batch.source, batch.target])
        for net, optimizer in zip(self.nets, self.optimizers):
            optimizer.zero_grad(set_to_none=True)
            with self.trainer.autocast():
                logits = net(images)
            F.cross_entropy(logits[: batch.source.shape[0]].float(), batch.labels).backward()
            optimizer.step()


def saved_bytes(trainer: Trainer, batch, configs) -> list[int]:
    """Bytes autograd keeps for the backward pass of each model's forward (storages counted once)."""
    out = []
    for config in configs:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor, storages: dict[int, int] = storages) -> torch.Tensor:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), trainer.autocast():
            result = trainer.model([batch.source, batch.target], [config], 0.5)
        del result
        out.append(sum(storages.values()))
    return out


def bank_rows(arch: str, amp: str, args, device: torch.device, tmp: Path, photos: tuple[Path, Path]) -> list[dict]:
    cfg = TrainConfig(source=str(photos[0]), target=str(photos[1]), arch=arch, resolution=args.resolution,
                      batch_size=args.batch_size, model_batch=4, iters=1000, device=str(device), amp=amp, workers=0)
    trainer = Trainer(cfg, tmp / f"{arch}-{amp}", progress=False)
    batch = trainer.batch(0)
    plain = PlainNets(trainer, 0)

    def step(mode: str) -> None:
        trainer.cfg.backward = mode
        trainer.train_step(0, batch=batch)

    step("joint")  # warm-ups (and cuDNN's algorithm choices)
    step("per-model")
    plain.step(batch)
    bank_s, plain_s, per_model_s = [], [], []
    for _ in range(args.steps):  # alternating, so all three see the same machine
        bank_s.append(timed(lambda: step("joint"), device))
        plain_s.append(timed(lambda: plain.step(batch), device))
        per_model_s.append(timed(lambda: step("per-model"), device))
    trainer.cfg.backward = "joint"
    images = trainer.data.images_per_step()
    row = {"part": "bank", "arch": arch, "amp": str(trainer.amp_dtype or "off").replace("torch.", ""),
           "resolution": args.resolution, "batch_per_domain": args.batch_size, "model_batch": 4,
           "bank_step_s": round(statistics.median(bank_s), 4), "plain_steps_s": round(statistics.median(plain_s), 4),
           "bank_vs_plain": round(statistics.median(b / p for b, p in zip(bank_s, plain_s)), 3),
           "images_per_s": round(images / statistics.median(bank_s), 2)}
    weights_mb = sum(p.numel() * p.element_size() for p in trainer.model.parameters()) / 2**20
    configs = sandwich_configs(trainer.bank, 0, cfg.seed, 4)
    if device.type == "cuda":
        for mode in ("joint", "per-model"):
            trainer.cfg.backward = mode
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            trainer.train_step(0, batch=batch)
            torch.cuda.synchronize()
            row[f"peak_mb_{mode}"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        trainer.cfg.backward = "joint"
    else:
        saved = [b / 2**20 for b in saved_bytes(trainer, batch, configs)]
        row["peak_mb_joint"] = round(sum(saved) + 3 * weights_mb, 1)  # + weights, gradients, momentum
        row["peak_mb_per-model"] = round(max(saved) + 3 * weights_mb, 1)
        row["memory_kind"] = "autograd saved tensors + weights/grads/momentum (CPU estimate)"
    if device.type == "cuda":
        row["memory_kind"] = "torch.cuda.max_memory_allocated"
    row["per_model_step_s"] = round(statistics.median(per_model_s), 4)
    row["per_model_vs_joint"] = round(statistics.median(p / b for p, b in zip(per_model_s, bank_s)), 3)
    return [row]


def deterministic_rows(args, device: torch.device, tmp: Path, photos: tuple[Path, Path]) -> list[dict]:
    """CUDA only: a ResNet-50 bank step with deterministic kernels against cuDNN's own choice."""
    rows = []
    for deterministic in (False, True):
        cfg = TrainConfig(source=str(photos[0]), target=str(photos[1]), arch="resnet50", resolution=args.resolution,
                          batch_size=args.batch_size, iters=1000, device=str(device), deterministic=deterministic,
                          workers=0)
        trainer = Trainer(cfg, tmp / f"det-{deterministic}", progress=False)
        batch = trainer.batch(0)
        trainer.train_step(0, batch=batch)
        def step(trainer: Trainer = trainer, batch=batch) -> None:
            trainer.train_step(0, batch=batch)

        seconds = statistics.median(timed(step, device) for _ in range(args.steps))
        rows.append({"part": "deterministic", "arch": "resnet50", "deterministic": deterministic,
                     "bank_step_s": round(seconds, 4), "resolution": args.resolution})
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    rows[1]["deterministic_cost"] = round(rows[1]["bank_step_s"] / rows[0]["bank_step_s"], 3)
    return rows


def training_rate(threads: int, copies: int, seconds: float, tmp: Path) -> list[float]:
    """Steps per minute of ``copies`` default trainings run side by side for ``seconds``, each with ``threads``."""
    procs, runs = [], []
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    for i in range(copies):
        run = tmp / f"shared-{threads}-{copies}-{i}"
        runs.append(run)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "slimda.cli", "train", "--iters", "1000000", "--log-every", "1", "--no-eval",
             "--threads", str(threads), "--print-every", "1000000", "--force", "--out", str(run)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(seconds)
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    rates = []
    for run in runs:  # the log is written as it goes, one row a step: steps over training seconds
        log = pd.read_csv(run / "train_log.csv") if (run / "train_log.csv").exists() else None
        rates.append(0.0 if log is None else 60 * log["step"].iloc[-1] / log["elapsed_s"].iloc[-1])
    return rates


def shared_host_rows(args, tmp: Path) -> list[dict]:
    rows = []
    for threads, label in ((cpu_count(), "torch default (every core)"), (default_threads(), "slimda default (half)")):
        alone = training_rate(threads, 1, args.shared_seconds, tmp)[0]
        beside = training_rate(threads, 2, args.shared_seconds, tmp)
        rows.append({"part": "shared_host", "threads": threads, "threads_rule": label,
                     "steps_per_min_alone": round(alone, 1),
                     "steps_per_min_shared": round(statistics.mean(beside), 1),
                     "shared_vs_alone": round(statistics.mean(beside) / alone, 3)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resolution", type=int, default=None, help="default: 224 on CUDA, 96 on the CPU")
    parser.add_argument("--batch-size", type=int, default=32, help="images per domain per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--archs", default="resnet50,mobilenet_v2")
    parser.add_argument("--amp", default="off,on", help="off, on (bf16 where the device has it), or both")
    parser.add_argument("--shared-seconds", type=float, default=45.0,
                        help="seconds each shared-host scenario trains (0: skip that part)")
    parser.add_argument("--out", default=str(RESULTS / "train_throughput.csv"))
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    args.resolution = args.resolution or (224 if device.type == "cuda" else 96)
    machine = f"{platform.node()} {cpu_count()} cores" + (f" {torch.cuda.get_device_name()}" if device.type == "cuda"
                                                          else "")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        photos = make_photo_domains(tmp / "photos", per_class=max(args.batch_size, 8), longer_side=(300, 500))
        for arch in args.archs.split(","):
            for amp in args.amp.split(","):
                mode = "off" if amp == "off" else ("auto" if device.type == "cuda" else "bf16")
                rows += bank_rows(arch, mode, args, device, tmp, photos)
                print(rows[-1], flush=True)
        if device.type == "cuda":
            rows += deterministic_rows(args, device, tmp, photos)
        if args.shared_seconds > 0:
            rows += shared_host_rows(args, tmp)
    for row in rows:
        row["machine"] = machine
    columns = list(dict.fromkeys(k for row in rows for k in row))
    write_csv_atomic(args.out, [{c: row.get(c, "") for c in columns} for row in rows])
    print_table([{c: row.get(c, "") for c in columns} for row in rows])


if __name__ == "__main__":
    main()
