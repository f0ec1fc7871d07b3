"""``slimda label-estimate``: a deployment's target accuracy from the few images a person labelled."""

from __future__ import annotations

import argparse

DESCRIPTION = """Read the labels a person wrote into DIR/DEVICE/labels/labels.csv (for the images that
`slimda deploy --label-budget N` picked) and estimate the deployed model's accuracy on the target with a 90%
interval by prediction-powered inference (the labels correct the model's own predicted chance of being right on
every scored image, which narrows the interval and keeps it valid whatever the shift). Prints it, writes
labels/estimate.json and adds labelled_target_accuracy to the deployment's manifest.json.

examples:
  slimda deploy --bank runs/site --target /data/site-b --latency 20ms --label-budget 400
  (label the images in runs/site/deploy/cpu-onnxruntime/labels/, filling in labels.csv)
  slimda label-estimate runs/site/deploy/cpu-onnxruntime
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("deployment", metavar="DIR", help="a deployment folder (DIR/DEVICE) or its labels/ folder")


def run(args: argparse.Namespace) -> int:
    from slimda.deploy.labelling import read_labels

    result = read_labels(args.deployment)
    print(f"accuracy on the target: {100 * result['value']:.1f}% (90% interval {100 * result['low']:.1f}-"
          f"{100 * result['high']:.1f}%), from {result['labels']} labelled images and the model's predictions on "
          f"{result['unlabelled']} ({result['method']}); {100 * result['labelled_accuracy']:.1f}% of the labelled "
          "images were right")
    return 0
