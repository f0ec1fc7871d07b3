"""``slimda train`` / ``slimda-train``: one run that adapts a whole bank of widths to the target domain."""

from __future__ import annotations

import argparse
import json
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
  torchrun --nproc_per_node 2 -m slimda.cli train --out runs/ddp --iters 500
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slimda.model.heads import HEADS
    from slimda.select.upem import DISTANCES
    from slimda.train.config import LR_SCHEDULES
    from slimda.train.objectives import objective_names
    from slimda.train.seed import CONFIDENCES

    # Defaults are None so that --resume can tell which options were given on the command line.
    add = parser.add_argument
    add("--out", required=True, metavar="RUN", help="run directory for bank.pt, logs and checkpoints")
    add("--source", help="labelled source domain: mnist, digits or an ImageFolder path (default: mnist)")
    add("--target", help="unlabelled target domain: name or folder (default: digits)")
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
    add("--lr-schedule", choices=LR_SCHEDULES, help="anneal: lr/(1+10p)^0.75 (default), cosine or constant")
    add("--seed", type=int, help="random seed (default: 0)")
    add("--device", help="cpu, cuda, cuda:N or auto (default: auto)")
    add("--resolution", type=int, help="square input size (default: the larger native size; 224 for ImageNet nets)")
    add("--checkpoint-every", type=int, help="steps between checkpoints (default: 250)")
    add("--log-every", type=int, help="steps between train_log.csv rows (default: 10)")
    add("--eval-distance", choices=DISTANCES, help="UPEM distance in eval.csv (default: kl)")
    add("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add("--force", action="store_true", help="overwrite a run that already exists in --out")
    add("--no-eval", action="store_true", help="skip writing eval.csv at the end")


def resolve_config(args: argparse.Namespace):
    """The run's TrainConfig: defaults, overridden by the given options; on --resume the saved config."""
    from slimda.errors import SlimdaError
    from slimda.train.config import TrainConfig

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    if not args.resume:
        return TrainConfig(**given)
    path = Path(args.out) / "config.json"
    if not path.exists():
        raise SlimdaError(f"nothing to resume in {args.out}: it has no config.json")
    saved = json.loads(path.read_text())
    saved = {k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__}
    changeable = {"device", "log_every", "checkpoint_every"}
    differ = {k: (saved.get(k), v) for k, v in given.items() if k not in changeable and saved.get(k) != v}
    if differ:
        listed = ", ".join(f"--{k.replace('_', '-')} {new!r} (run has {old!r})" for k, (old, new) in differ.items())
        raise SlimdaError(f"--resume continues the run as configured; these options differ: {listed}")
    return TrainConfig.from_dict({**saved, **given})


def run(args: argparse.Namespace) -> int:
    from slimda.tables import print_table
    from slimda.train.distributed import init_distributed
    from slimda.train.trainer import Trainer

    if args.resume and args.force:
        from slimda.errors import SlimdaError

        raise SlimdaError("--resume and --force contradict each other: pick one")
    cfg = resolve_config(args)
    cfg.validate()
    init_distributed(cfg.device)
    trainer = Trainer(cfg, args.out, progress=True)
    summary = trainer.fit(resume=args.resume, force=args.force)
    if trainer.rank == 0:
        print(f"trained {summary['steps']} steps in {summary['train_seconds']} s → {Path(args.out) / 'bank.pt'}",
              file=sys.stderr)
        if not args.no_eval:
            rows = trainer.evaluate()
            shown = [r for r in rows if r["head"] == cfg.test_head]
            print_table([{k: r[k] for k in ("config", "config_id", "head", "target_acc", "upem", "flops_m")}
                         for r in shown])
    return 0
