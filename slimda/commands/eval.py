"""``slimda eval``: score sub-networks of a trained bank on target images."""

from __future__ import annotations

import argparse

DESCRIPTION = """Recalibrate BatchNorm on target images, then report for each configuration and head the target
accuracy (when the target folder has class folders) and UPEM against the largest model. Without --config or
--width, the standard set: uniform widths 0.25/0.5/0.75/1.0, smallest, largest.

With a source split (the images the run held out of training, or --source-val: labelled source images the bank
never trained on), each row also gets the source split's accuracy and the label-free estimate of the target
accuracy with its 90% interval and verdict (est_acc, est_acc_low, est_acc_high, est_verdict: "unreliable" where
the benchmark saw such estimates fail, e.g. on banks whose confidence adaptation trained in), beside DoC and
the average confidence.

examples:
  slimda eval --bank runs/mnist2digits --target digits
  slimda eval --bank runs/mnist2digits --target digits --width 0.5
  slimda eval --bank runs/mnist2digits --target /data/site-b --config 8-16-16-32-32-64-64 --csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slimda.commands.options import add_target_scoring_arguments
    from slimda.model.heads import HEADS

    parser.add_argument("--bank", required=True, help="run directory or bank.pt written by slimda-train")
    parser.add_argument("--target", required=True, help="target images: a built-in name or a folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", action="append", metavar="ID", help="configuration id (repeatable)")
    which.add_argument("--width", action="append", type=float, metavar="R", help="uniform width ratio (repeatable)")
    parser.add_argument("--head", action="append", choices=HEADS, help="heads to report (default: all)")
    add_target_scoring_arguments(parser, calibration_default=1024, score_images=False)
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed choosing the calibration images (default: 0)")
    parser.add_argument("--csv", action="store_true", help="print CSV")


def run(args: argparse.Namespace) -> int:
    from slimda.data.loading import use_threads
    from slimda.model.compute import resolve_compute
    from slimda.model.heads import HEADS
    from slimda.deploy.setup import BankRun, TargetScoring
    from slimda.select.evaluate import evaluate_configs, load_target_images, standard_configs
    from slimda.tables import print_table

    compute = resolve_compute(args.score_device, args.score_amp, args.score_layout)
    use_threads(args.score_threads, "--threads")
    run = BankRun.open(args.bank)
    bank, meta = run.bank, run.meta
    target = load_target_images(args.target, meta, args.calibration_images, batch_size=args.batch_size,
                                seed=args.seed, workers=args.workers)
    # --source-val DATA, else the split the run held out of training, if it has one
    source = run.source_val(TargetScoring(args.target, seed=args.seed, workers=args.workers,
                                          source_val=args.source_val, source_val_images=args.source_val_images))
    if args.config:
        configs = [(c, bank.space.from_id(c)) for c in args.config]
    elif args.width:
        configs = [(f"uniform-{w:g}", bank.space.uniform(w)) for w in args.width]
    else:
        configs = standard_configs(bank)
    rows = evaluate_configs(bank, configs, target.calibration, target.images, target.labels,
                            heads=args.head or HEADS, distance=args.distance, input_shape=(1, *meta.input_chw),
                            compute=compute, source=source)
    print_table(rows, csv_format=args.csv)
    return 0
