"""``slimda train`` / ``slimda-train``: one run that adapts a whole bank of widths to the target domain."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DESCRIPTION = """Train one slimmable model bank on labelled source images and unlabelled target images
(SlimDA's SEED + OSTC on top of an intra-model adaptation loss: DANN by default, or SymNet, Tzeng et al.'s
domain confusion, source-only). Writes RUN/bank.pt, config.json, train_log.csv, checkpoint.pt
and, at the end, eval.csv (uniform widths, smallest and largest, every head: target accuracy when the target
has labels, UPEM, FLOPs, parameters).

Domains are built-in names (mnist, digits) or ImageFolder paths (root/<class>/<image>, or root/<image> for an
unlabelled target). Under torchrun the same command trains one bank with DistributedDataParallel.

examples:
  slimda-train --source mnist --target digits --iters 1500 --out runs/mnist2digits
  slimda-train --out runs/mnist2digits --resume              # continue a killed run
  slimda-train --arch resnet50 --init resnet50-imagenet.pth --source office/amazon --target office/webcam \
      --batch-size 32 --out runs/a2w                           # photos from ImageNet weights
  torchrun --nproc_per_node 2 -m slimda.cli train --out runs/ddp --iters 500
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slimda.data.preprocessing import AUGMENTS, PHOTO_MIN_SIDE, PREPROCESSES
    from slimda.model.heads import HEADS
    from slimda.model.compute import AMPS
    from slimda.select.upem import DISTANCES
    from slimda.train.config import BACKWARD_MODES, LR_SCHEDULES
    from slimda.train.objectives import objective_names
    from slimda.train.seed import CONFIDENCES

    # Defaults are None so that --resume can tell which options were given on the command line.
    add = parser.add_argument
    add("--out", required=True, metavar="RUN", help="run directory for bank.pt, logs and checkpoints")
    add("--source", help="labelled source domain: mnist, digits or an ImageFolder path (default: mnist)")
    add("--target", help="unlabelled target domain: name or folder (default: digits)")
    add("--source-val", type=float, metavar="SHARE",
        help="share of the source images held out of training, at most 2000 images, drawn from --seed: a labelled "
        "split that target-accuracy estimates are calibrated on (eval.csv's source_val_acc); 0 trains on every "
        "source image (default: 0; 0.1 is what the estimates are built for)")
    add("--arch", help="backbone: digits-cnn, resnet18, resnet50, mobilenet_v2 (default: digits-cnn)")
    add("--iters", type=int, help="training steps (default: 1500)")
    add("--objective", choices=objective_names(),
        help="intra-model adaptation loss (default: dann, the best measured on mnist -> digits)")
    add("--no-seed", dest="seed_ensemble", action="store_const", const=False,
        help="turn SEED/OSTC off: the plain 'objective on a slimmable bank' baseline")
    add("--model-batch", type=int, help="models per step: largest, smallest and M-2 random (default: 4)")
    add("--widths", help="width ratio grid, '0.25,0.5,1' or 'start:stop:step' (default: 0.25:1:0.125)")
    add("--seed-confidence", choices=CONFIDENCES, help="SEED's per-image model weight (default: max)")
    add("--seed-temperature", type=float, help="SEED's sharpening temperature T, p^(1/T) (default: 0.5)")
    add("--seed-weight", type=float, help="weight of the SEED distillation loss (default: 1.0)")
    add("--test-head", choices=HEADS, help="head used at test time and in exports (default: ca)")
    add("--target-labeled", type=int, metavar="N",
        help="use N labelled target images per class (semi-supervised; enables soft labels) (default: 0)")
    add("--soft-temperature", type=float, help="temperature of Tzeng et al.'s soft labels (default: 2.0)")
    add("--soft-weight", type=float, help="weight of the soft-label loss (default: 0.1)")
    add("--confusion-weight", type=float, help="weight of the domain confusion loss (default: 1.0)")
    add("--batch-size", type=int, help="images per domain per step (default: 64)")
    add("--lr", type=float, help="initial SGD learning rate (default: 0.01)")
    add("--init", metavar="FILE",
        help="start from these weights: a torchvision state dict (.pth, with or without its classifier; e.g. "
        "ImageNet weights saved with torch.save(model.state_dict(), FILE)) for resnet18/resnet50/mobilenet_v2, "
        "or an earlier run's bank.pt (re-adapt a bank to a new target with the same classes). Read without "
        "running pickled code; its SHA-256 goes into config.json")
    add("--backbone-lr-mult", type=float, metavar="X",
        help="backbone learning rate = X × --lr; heads and discriminator use --lr (default: 0.1 with --init, "
        "as pretrained backbones are fine-tuned, else 1)")
    add("--lr-schedule", choices=LR_SCHEDULES, help="anneal: lr/(1+10p)^0.75 (default), cosine or constant")
    add("--seed", type=int, help="random seed (default: 0)")
    add("--device", help="cpu, cuda, cuda:N or auto (default: auto)")
    add("--resolution", type=int, help="square input size (default: the larger native size; 224 for ImageNet nets). "
        "Under the photo recipe images are resized by their shorter side to resolution/0.875 and cropped to it")
    add("--preprocess", choices=PREPROCESSES,
        help="how images become the model's input: plain (resized straight to the input size: digits, icons, "
        "objects that reach the border) or photo (shorter side resized to resolution/0.875, centre crop; training "
        f"random crop + flip); auto: photo when both domains' images are at least {PHOTO_MIN_SIDE} px on their "
        "shorter side, plain when both are smaller, and when only one is, photo with --init only. The choice and "
        "its reason go into config.json (default: auto)")
    add("--augment", choices=AUGMENTS,
        help="training augmentation: crop-flip (random crop + horizontal flip, as SymNets trains), resized-crop-flip "
        "(RandomResizedCrop + flip) or none; auto: crop-flip under the photo recipe, none under plain (a flip can "
        "change a digit's class) (default: auto)")

    speed = parser.add_argument_group("speed")
    speed.add_argument("--workers", type=int, metavar="N",
                       help="DataLoader processes decoding and augmenting images while the model computes (0: in the "
                       "training process); default: 0 for the built-in digits; on a GPU every core but two, up to 16; "
                       "on the CPU the cores --threads leaves, 1-8")
    speed.add_argument("--cache-images", action="store_true", default=None,
                       help="decode and resize every image once and keep them in memory as uint8 (refused when that "
                       "would take more than half the free memory); saves the JPEG decoding of every later epoch")
    speed.add_argument("--threads", type=int, metavar="N",
                       help="torch's CPU threads; default: half the cores, so a second job on the host (a table build, "
                       "a deploy, another training) does not make both collapse")
    speed.add_argument("--amp", choices=AMPS,
                       help="mixed precision of the forward passes (losses stay float32): bf16, fp16 (with loss "
                       "scaling) or off; auto: bf16 on CUDA GPUs that have it, else fp16, off on the CPU. On the CPU "
                       "bf16 runs CPU autocast and fp16 is refused (default: auto)")
    speed.add_argument("--deterministic", action="store_true", default=None,
                       help="reproducible CUDA kernels, so --resume ends with the uninterrupted run's exact weights on "
                       "a GPU too (CPU runs are exact without it); costs speed, see benchmarks/train_throughput.py")
    speed.add_argument("--backward", choices=BACKWARD_MODES,
                       help="joint: one backward of the summed loss of the model batch; per-model: one backward per "
                       "model, so only one model's activations are held (less GPU memory, plus one forward of the "
                       "target images for SEED's ensemble) (default: joint)")
    speed.add_argument("--print-every", type=int, metavar="N",
                       help="steps between progress lines when the output is not a terminal (default: 100)")
    add("--checkpoint-every", type=int, help="steps between checkpoints (default: 250)")
    add("--log-every", type=int, help="steps between train_log.csv rows (default: 10)")
    add("--eval-distance", choices=DISTANCES, help="UPEM distance in eval.csv (default: kl)")
    add("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add("--force", action="store_true", help="overwrite a run that already exists in --out")
    add("--no-eval", action="store_true", help="skip writing eval.csv at the end")


def resolve_config(args: argparse.Namespace):
    """The run's TrainConfig: defaults, overridden by the given options; on --resume the saved config."""
    from slimda.errors import SlimdaError
    from slimda.train.config import RESUMABLE_CHANGES, TrainConfig

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    if not args.resume:
        return TrainConfig(**given)
    path = Path(args.out) / "config.json"
    if not path.exists():
        raise SlimdaError(f"nothing to resume in {args.out}: it has no config.json")
    saved = json.loads(path.read_text())
    if "preprocess" not in saved:  # a run from before --preprocess continues with the recipe it was trained on
        saved["preprocess"] = "photo" if (saved.get("preprocessing") or {}).get("resize") else "plain"
    saved.setdefault("source_val", 0.0)  # a run from before the split trained on every source image
    saved = {k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__}
    differ = {k: (saved.get(k), v) for k, v in given.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v}
    if differ:
        listed = ", ".join(f"--{k.replace('_', '-')} {new!r} (run has {old!r})" for k, (old, new) in differ.items())
        raise SlimdaError(f"--resume continues the run as configured; these options differ: {listed}")
    return TrainConfig.from_dict({**saved, **given})


def run(args: argparse.Namespace) -> int:
    from slimda.data.loading import default_threads
    from slimda.tables import print_table
    from slimda.train.distributed import init_distributed, shutdown_distributed
    from slimda.train.trainer import Trainer

    if args.resume and args.force:
        from slimda.errors import SlimdaError

        raise SlimdaError("--resume and --force contradict each other: pick one")
    cfg = resolve_config(args)
    cfg.validate()
    if cfg.threads is None:  # a library Trainer keeps torch's threads; the command shares the host
        cfg.threads = default_threads()
    if cfg.init and not args.resume:  # a wrong file fails before minutes of data loading
        from slimda.model.pretrained import read_weights_file

        read_weights_file(cfg.init)
    init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, args.out, progress=True)
        summary = trainer.fit(resume=args.resume, force=args.force)
    except BaseException:
        shutdown_distributed(succeeded=False)
        raise
    shutdown_distributed(succeeded=True)  # the last collective is behind us; rank 0 evaluates alone
    if trainer.rank != 0:
        # Nothing is left for this rank to do. Leaving through the interpreter's teardown can still abort it
        # ("terminate called without an active exception", SIGABRT, seen in CI and under load here): the
        # training's DDP reducer keeps the gloo group alive past destroy_process_group, and its threads, still
        # waiting on rank 0's sockets, are destroyed joinable. Its files are written; exit without the teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if trainer.rank == 0:
        print(f"trained {summary['steps']} steps in {summary['train_seconds']} s → {Path(args.out) / 'bank.pt'}",
              file=sys.stderr)
        if not args.no_eval:
            rows = trainer.evaluate()
            shown = [r for r in rows if r["head"] == cfg.test_head]
            print_table([{k: r[k] for k in ("config", "config_id", "head", "target_acc", "upem", "flops_m")}
                         for r in shown])
    return 0
