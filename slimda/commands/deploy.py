"""``slimda deploy``: the best sub-network of a bank for each device's budget, exported and measured."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slimda.deploy.deployer import Deployment
    from slimda.select.budget import Budgets

DESCRIPTION = """Pick, without a target label, the sub-network of a trained bank that should be most accurate on
the target domain within a budget, then export it for each device and time it there.

For each --device: an evolutionary search over the bank's widths keeps only sub-networks whose latency
(predicted by the device's lookup table from slimda-profile), FLOPs and parameters fit the budgets, and
minimises UPEM on target images (BatchNorm recalibrated on them). The winner is exported to ONNX at the
device's opset, checked against PyTorch, converted for the runtime (OpenVINO IR, ORT format, TensorRT engine
built on the Jetson) and re-measured on the device; if it is over the latency budget there, the search runs
again under a tighter predicted limit. With --precision int8 or auto, int8 candidates are quantized with ONNX
Runtime's tools on target images that never score, scored as quantized, and deployed only when their top-1
agreement with their fp32 network reaches --int8-agreement. Writes DIR/DEVICE/{model.onnx, artefact,
manifest.json} and a row in DIR/deploy_report.csv.

examples:
  slimda deploy --bank runs/mnist2digits --target digits --latency 0.1ms
  slimda deploy --bank runs/site --target /data/site-b --latency 20ms --device cpu-openvino --device ort-mobile
  slimda deploy --bank runs/site --target /data/site-b --latency 20ms --device jetson-nano --host ubuntu@jetson
  slimda deploy --bank runs/site --target /data/site-b --flops 300M --params 2.5M --out deploy/site-b
  slimda deploy --bank runs/site --target /data/site-b --latency 20ms --device cpu-openvino --precision auto
    (after slimda-profile --device cpu-openvino --bank runs/site [--precision int8] for each precision's table)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slimda.commands.options import add_int8_arguments, add_measure_arguments, add_target_scoring_arguments
    from slimda.model.heads import HEADS
    from slimda.select.evaluate import DEFAULT_SELECT_BY, SELECT_BY

    what = parser.add_argument_group("what to deploy")
    what.add_argument("--bank", required=True, metavar="RUN", help="run directory written by slimda-train "
                      "(its latency tables are read from RUN/latency/DEVICE.csv)")
    what.add_argument("--target", required=True, metavar="DATA",
                      help="target images: a built-in domain name or a folder (labels, if any, are only reported)")
    what.add_argument("--device", action="append", metavar="DEVICE",
                      help="device to deploy to; repeat or separate with commas for a fleet (default: "
                      "cpu-onnxruntime). slimda-profile --list-devices lists them")
    what.add_argument("--out", metavar="DIR", help="output folder (default: RUN/deploy)")
    what.add_argument("--batch", type=int, metavar="N", help="batch size of the exported model's input (default: the "
                      "batch the device's latency table was timed at, 1); a latency budget needs a table timed at "
                      "this batch (slimda-profile --bank RUN --batch N)")
    what.add_argument("--dynamic-batch", action="store_true",
                      help="export the input's batch axis as symbolic, so the model runs any batch size (ONNX "
                      "Runtime, OpenVINO; not TensorRT engines); it is timed at the table's batch")

    budget = parser.add_argument_group("budgets (at least one)")
    budget.add_argument("--latency", metavar="TIME", help="latency on the device: 20ms, '20 ms', 0.02s, 500us")
    budget.add_argument("--flops", metavar="COUNT", help="FLOPs per image: 300M, 1.2G, 1.2GFLOPs")
    budget.add_argument("--params", metavar="COUNT", help="parameters: 2.5M, 800k")

    search = parser.add_argument_group("search")
    search.add_argument("--head", choices=HEADS, help="test-time head exported and scored (default: the bank's)")
    add_target_scoring_arguments(search, plain_threads=False)
    search.add_argument("--select-by", choices=SELECT_BY, default=DEFAULT_SELECT_BY,
                        help="what the search minimises: upem (distance to the largest network, the paper's), "
                        "upem-ensemble (to the uniform widths' mean prediction) or estimate (the estimated target "
                        "accuracy, maximised; needs a source split). Default: upem, whose ranking agreed best with "
                        "the true accuracy in benchmarks/accuracy_estimation.py")
    search.add_argument("--population", type=int, default=24, help="search population (default: 24)")
    search.add_argument("--generations", type=int, default=8, help="search generations (default: 8)")
    search.add_argument("--seed", type=int, default=0, help="seed of the search and of the image choice")
    search.add_argument("--retries", type=int, default=2,
                        help="searches again under a tighter limit when the measured latency is over budget "
                        "(default: 2)")
    search.add_argument("--tolerance", type=float, default=0.0, metavar="SHARE",
                        help="a measured latency up to budget x (1 + SHARE) still counts as within budget (no retry, "
                        "within_budget true); e.g. 0.05 for the ~5 %% a shared host's timing wanders (default: 0)")
    search.add_argument("--no-measure", action="store_true",
                        help="skip timing the exported model on the device (the manifest then has no measured "
                        "latency)")
    search.add_argument("--label-budget", type=int, default=0, metavar="N",
                        help="also pick N scored target images at random for a person to label, written to "
                        "DIR/DEVICE/labels/ with a labels.csv to fill in; `slimda label-estimate DIR/DEVICE` then "
                        "gives the accuracy with a 90%% interval valid whatever the shift (320-450 labels reached "
                        "+-2 points on the mnist -> digits banks of benchmarks/accuracy_estimation.py). Default: 0")
    search.add_argument("--ort-platform", choices=("arm", "amd64"), default="arm",
                        help="ort-mobile: platform the ORT-format model is optimised for (default: arm, phones)")
    add_int8_arguments(parser)
    add_measure_arguments(parser, resolution=False, search=True)


def budgets_from_args(args: argparse.Namespace) -> Budgets:
    """The ``--latency``, ``--flops`` and ``--params`` budgets (at least one, each parsed with its unit)."""
    from slimda.select.budget import Budgets, parse_count, parse_latency

    return Budgets(latency=parse_latency(args.latency) if args.latency else None,
                   flops=parse_count(args.flops, "flops") if args.flops else None,
                   params=parse_count(args.params, "params") if args.params else None)


def run(args: argparse.Namespace) -> int:
    from slimda.commands.options import (
        check_output_folder,
        devices_from_args,
        int8_from_args,
        options_from_args,
        target_scoring_from_args,
    )
    from slimda.deploy.deployer import DeployOptions, deploy_fleet
    from slimda.deploy.setup import open_deployer
    from slimda.errors import ConfigError
    from slimda.profilers.devices import get_device
    from slimda.select.search import SearchSettings

    if args.population < 2 or args.generations < 1:
        raise ConfigError("--population must be at least 2 and --generations at least 1")
    if args.retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {args.retries}")
    if not 0 <= args.tolerance < 1:
        raise ConfigError(f"--tolerance is a share of the budget in [0, 1), e.g. 0.05; got {args.tolerance}")
    if args.label_budget < 0:
        raise ConfigError(f"--label-budget must be 0 (none) or more, got {args.label_budget}")
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    check_output_folder(args.out)
    budgets = budgets_from_args(args)  # bad budgets fail before the bank is read
    devices = devices_from_args(args.device)
    for name in devices:
        get_device(name)  # an unknown device names the list before any work
    precision = args.precision
    if precision not in (None, "auto"):
        for name in devices:
            get_device(name).check_precision(precision)  # a precision a device lacks fails before any work
    int8 = int8_from_args(args)
    options = DeployOptions(
        measure_options=options_from_args(args),
        settings=SearchSettings(population=args.population, generations=args.generations, seed=args.seed),
        measure=not args.no_measure, retries=args.retries, tolerance=args.tolerance, ort_platform=args.ort_platform,
        precision=precision,
        int8=int8, batch=args.batch, dynamic_batch=args.dynamic_batch, label_budget=args.label_budget)
    deployer = open_deployer(args.bank, target_scoring_from_args(args), options, args.out)
    print_deployments(deploy_fleet(deployer, devices, budgets))
    return 0


def print_deployments(deployments: Sequence[Deployment]) -> None:
    """One table row per deployment: budget, choice, predicted vs measured latency, scores, folder."""
    from slimda.select.estimate import estimate_text
    from slimda.tables import print_table

    rows = []
    for d in deployments:
        m = d.manifest
        rows.append({"device": m.device, "budget": m.budget.text("; "), "precision": m.precision.precision,
                     "config_id": m.network.config_id, "width": m.network.width,
                     "predicted_ms": _text(m.latency.predicted_ms),
                     "measured_ms": _text(m.latency.measured_ms), "upem": m.scores.upem,
                     "est_acc": estimate_text(m.scores.estimate), "target_acc": _text(m.scores.target_acc),
                     "flops_m": m.network.flops_m, "dir": str(d.dir)})
    print_table(rows)


def _text(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
