"""``slimda eval``: score sub-networks of a trained bank on target images."""

from __future__ import annotations

import argparse

DESCRIPTION = """Recalibrate BatchNorm on target images, then report for each configuration and head the target
accuracy (when the target folder has class folders) and UPEM against the largest model. Without --config or
--width, the standard set: uniform widths 0.25/0.5/0.75/1.0, smallest, largest.

With --source-val (labelled source images the bank never trained on), each row also gets the source split's
accuracy and label-free estimates of the target accuracy: ATC, DoC and the average confidence.

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
    parser.add_argument("--source-val", metavar="DATA", help="labelled source images the bank never trained on (one "
                        "folder per class): adds each network's source accuracy and label-free estimates of its "
                        "target accuracy (ATC, DoC, average confidence; slimda.select.estimate). Default: the source "
                        "images the run held out of training (slimda-train --source-val), if any")
    parser.add_argument("--source-val-images", type=int, default=2000, metavar="N",
                        help="source images used from --source-val, at random; 0 = all (default: 2000)")
    parser.add_argument("--csv", action="store_true", help="print CSV")


def run(args: argparse.Namespace) -> int:
    from slimda.data.loading import use_threads
    from slimda.model.bank import load_bank
    from slimda.model.compute import resolve_compute
    from slimda.model.heads import HEADS
    from pathlib import Path

    from slimda.select.evaluate import (
        evaluate_configs,
        load_run_source_val,
        load_source_val,
        load_target_images,
        standard_configs,
    )
    from slimda.tables import print_table

    compute = resolve_compute(args.score_device, args.score_amp, args.score_layout)
    use_threads(args.score_threads, "--threads")
    bank, meta = load_bank(args.bank)
    target = load_target_images(args.target, meta, args.calibration_images, batch_size=args.batch_size,
                                seed=args.seed, workers=args.workers)
    if args.source_val:
        source = load_source_val(args.source_val, meta, args.source_val_images, args.seed, args.workers)
    else:  # the split the run held out of training, if it has one
        run_dir = Path(args.bank) if Path(args.bank).is_dir() else Path(args.bank).parent
        source = load_run_source_val(run_dir, meta, args.source_val_images, args.seed, args.workers)
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
