"""``slimda predict``: classify image files with a deployed model, with no torch (``slimda.runtime``)."""

from __future__ import annotations

import argparse

DESCRIPTION = """Classify image files with a deployment written by slimda deploy, as the device runs it: the
manifest's preprocessing applied with Pillow and NumPy, the model file checked against its SHA-256 and run by
its runtime (ONNX Runtime for .onnx/.ort, OpenVINO for an IR, TensorRT with cuda-python for an engine).
Needs no torch: on a device, pip install 'slimda[onnxruntime]' (or [openvino]; a Jetson's JetPack brings
TensorRT) installs this command alone.

Writes one CSV row per image (file, class, probability, the top-k classes with their probabilities) to --out or
standard output, and a summary to standard error: images/s, and per-image preprocessing and inference time
(p50/p90/p99; at --batch 1 the latency of one image, at a larger batch the throughput). An image that cannot be
read is named and skipped; the others are still predicted and the exit status is 1 at the end.

With --labels, IMAGES are labelled folders (FOLDER/<class>/<image>): it also reports top-1 and top-5 accuracy
against what the deployment expected (its estimate and, where deploy saw labels, its accuracy) and writes the
confusion matrix (--confusion FILE).

With --monitor, no labels are needed: every --window images are compared with the deploy-time target (the
manifest's estimate, threshold and confidence summary), alerts are printed as they happen and written to
monitor.csv, and the run ends saying whether the site still looks like the one the model was deployed for.

examples:
  slimda predict runs/site/deploy/cpu-onnxruntime photos/*.jpg
  slimda predict runs/site/deploy/cpu-openvino /data/site-b --out predictions.csv --batch 32
  slimda predict runs/site/deploy/cpu-onnxruntime /data/site-b-labelled --labels --confusion confusion.csv
  slimda predict runs/site/deploy/cpu-onnxruntime /data/site-b/today --monitor --window 200 --fail-on-drift
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("deployment", metavar="DEPLOYMENT", help="a deployment folder (DIR/DEVICE) or a model in one")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders (searched recursively) "
                        "or glob patterns")
    parser.add_argument("--out", metavar="FILE", help="CSV of predictions (default: standard output)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes listed per image (default: 5)")
    parser.add_argument("--batch", type=int, default=1, metavar="N",
                        help="images per forward pass (default: 1; a model exported with a fixed batch runs in "
                        "its own batch whatever this says)")
    parser.add_argument("--threads", type=int, metavar="N", help="the runtime's CPU threads (default: its own)")
    parser.add_argument("--model", metavar="FILE", help="another model file of the deployment to run (e.g. "
                        "model.onnx beside an engine); default: the artefact the manifest names")
    parser.add_argument("--labels", action="store_true",
                        help="IMAGES are labelled folders (FOLDER/<class>/<image>): report accuracy")
    parser.add_argument("--confusion", metavar="FILE", help="with --labels: write the confusion matrix as CSV")
    watch = parser.add_argument_group("monitoring without labels")
    watch.add_argument("--monitor", nargs="?", const="monitor.csv", metavar="FILE",
                       help="per window of images: the label-free accuracy estimate with the deploy-time threshold, "
                       "its band, mean confidence, the commonest class, and an alert when fewer images pass the "
                       "threshold than at deploy time (Fisher's exact test) or confidence is distributed unlike at "
                       "deploy time (chi-square on entropies), each at p < 0.001; "
                       "writes FILE (default monitor.csv) and says whether the site still looks like the one the "
                       "model was deployed for. Needs a deployment made with a source split")
    watch.add_argument("--window", type=int, default=200, metavar="N", help="images per window (default: 200)")
    watch.add_argument("--fail-on-drift", action="store_true",
                       help="exit with status 3 when any window alerts (default: 0, for a cron job or a service)")


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from slimda.console import progress_bar, say
    from slimda.errors import ConfigError
    from slimda.runtime import load
    from slimda.runtime.reports import accuracy_report, classify, image_files, timing_summary
    from slimda.tables import print_table, write_csv_atomic

    if args.top_k < 1 or args.batch < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError("--top-k, --batch and --threads must be at least 1")
    if args.confusion and not args.labels:
        raise ConfigError("--confusion needs --labels (the images' classes come from their folders)")
    predictor = load(args.deployment, args.model, args.threads)
    files = image_files(args.images)
    labels = None
    if args.labels:
        labels = {f: f.parent.name for f in files}
        unknown = sorted(set(labels.values()) - set(predictor.class_names))
        if unknown:
            raise ConfigError(f"--labels: folders {unknown} are not classes of the model "
                              f"({', '.join(predictor.class_names)}); give FOLDER/<class>/<image> trees whose class "
                              "folders are named as the model's")
    monitor = None
    if args.monitor:
        from slimda.runtime.monitor import Monitor

        monitor = Monitor(predictor.manifest, predictor.class_names, args.window)
    elif args.fail_on_drift:
        raise ConfigError("--fail-on-drift needs --monitor")
    started = time.perf_counter()
    with progress_bar(len(files), "predict", "img") as bar:
        def on_image(path: Path, probs, error: str) -> None:
            bar.update(1)
            if probs is None:
                say(f"skipped: {error}")
                return
            window = monitor.add(path, probs) if monitor else None
            if window is not None and window.alert:
                say(f"alert, window {window.index} ({window.first} .. {window.last}): {window.why}")

        rows, failed = classify(predictor, files, args.batch, args.top_k, labels, on_image)
    seconds = time.perf_counter() - started
    if args.out:
        write_csv_atomic(Path(args.out), rows)
    else:
        print_table(rows, csv_format=True)
    say(timing_summary(predictor.timings, len(rows), seconds, predictor.backend.name))
    if labels is not None and rows:
        report, confusion = accuracy_report(rows, predictor.class_names, predictor.manifest)
        print_table(report, file=sys.stderr)
        if args.confusion:
            write_csv_atomic(Path(args.confusion), confusion)
    drifted = False
    if monitor:
        monitor.finish()
        write_csv_atomic(Path(args.monitor), [w.row() for w in monitor.windows])
        say(monitor.verdict() + f" ({args.monitor})")
        drifted = any(w.alert for w in monitor.windows)
    if failed:
        say(f"{failed} of {len(files)} images could not be read (named above); the others were predicted")
        return 1
    return 3 if drifted and args.fail_on_drift else 0
