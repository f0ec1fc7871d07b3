"""Options that several commands share: "how to measure" and "remote targets" (slimda-profile and
slimda-deploy), devices and target scoring (slimda deploy, bench, eval)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from slimda.errors import ConfigError
from slimda.profilers.config import PERF_TEST_PATH, PRECISIONS, AdbOptions, MeasureOptions, SSHOptions, TensorRTOptions
from slimda.profilers.devices import JETPACK_TRTEXEC

if TYPE_CHECKING:
    from slimda.deploy.precision import Int8Settings
    from slimda.deploy.setup import TargetScoring


def add_measure_arguments(parser: argparse.ArgumentParser, resolution: bool = True, search: bool = False) -> None:
    """The "how to measure" and "remote targets" options (slimda-deploy re-measures with the same ones).

    ``search``: ``--precision`` is what slimda-deploy searches (with ``auto``), not only what it times in.
    """
    how = parser.add_argument_group("how to measure")
    how.add_argument("--threads", type=int, help="CPU threads (intra-op threads / INFERENCE_NUM_THREADS); "
                     "default: the device profile's (1)")
    if search:
        how.add_argument("--precision", choices=(*PRECISIONS, "auto"),
                         help="precision to deploy in; auto: search every precision the device supports (each "
                         "under its own latency table, RUN/latency/DEVICE[-PRECISION].csv) and keep the one whose "
                         "sub-network scores best as deployed. int8 models are quantized on target images. "
                         "Default: the device's (fp32 on CPUs, fp16 on Jetsons/TensorRT); slimda-profile "
                         "--list-devices shows what each supports")
    else:
        how.add_argument("--precision", choices=PRECISIONS,
                         help="inference precision; default: the device's (fp32 on CPUs, fp16 on Jetsons/TensorRT); "
                         "slimda-profile --list-devices shows what each supports. int8 needs a quantized (QDQ) "
                         "model. The precision actually used is what the row records")
    if resolution:
        how.add_argument("--resolution", metavar="HxW", help="input height x width for models with a symbolic "
                         "spatial size (and the bank's input size with --bank), e.g. 224x224 or 224")
        how.add_argument("--batch", type=int, default=1, help="batch size of the timed input (default: 1)")
    how.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default: 10)")
    how.add_argument("--min-runs", type=int, default=50,
                     help="timed runs at least (default: 50); trtexec --iterations, perf_test -r")
    how.add_argument("--min-time", type=float, default=1.0, metavar="SECONDS",
                     help="time the model for at least this long (default: 1.0); trtexec --duration")

    remote = parser.add_argument_group("remote targets")
    remote.add_argument("--host", metavar="USER@ADDR", help="ssh target: the Jetson for jetson-* devices, or a "
                        "CPU box (slimda + runtime installed there) for cpu-* devices. Key login, no password")
    remote.add_argument("--port", type=int, help="ssh port (default: 22 or ~/.ssh/config)")
    remote.add_argument("--identity", metavar="KEYFILE", help="ssh private key file")
    remote.add_argument("--remote-python", default="python3",
                        help="interpreter with slimda installed on --host, for cpu-* devices (default: python3)")
    remote.add_argument("--adb", metavar="SERIAL", help="phone for ort-mobile, as `adb devices` lists it")
    remote.add_argument("--perf-test", metavar="PATH", default=PERF_TEST_PATH,
                        help=f"onnxruntime_perf_test on the phone (default: {PERF_TEST_PATH})")
    remote.add_argument("--trt-version", metavar="X.Y", help="TensorRT version on the device (8.2, 8.6, 10.3...): "
                        "picks the trtexec flags; default: detected from trtexec's banner or dpkg")
    remote.add_argument("--trtexec", metavar="PATH", default=JETPACK_TRTEXEC,
                        help=f"trtexec on the device (default: JetPack's {JETPACK_TRTEXEC})")


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    """``"224x160"`` -> (224, 160); ``"224"`` -> (224, 224)."""
    if not text:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ConfigError(f"--resolution must look like 224x224 or 224; got {text!r}")
    return values[0], values[1]


def options_from_args(args: argparse.Namespace) -> MeasureOptions:
    """``MeasureOptions`` from the parsed "how to measure" and "remote targets" options."""
    ssh = SSHOptions(args.host, args.port, args.identity, remote_python=args.remote_python) if args.host else None
    adb = AdbOptions(args.adb, perf_test_path=args.perf_test) if args.adb else None
    return MeasureOptions(
        threads=args.threads, precision=None if args.precision == "auto" else args.precision,
        batch=getattr(args, "batch", None) or 1,
        resolution=parse_resolution(getattr(args, "resolution", None)), warmup=args.warmup, min_runs=args.min_runs,
        min_time_s=args.min_time, ssh=ssh, adb=adb,
        tensorrt=TensorRTOptions(trt_version=args.trt_version, trtexec_path=args.trtexec),
    )


# ------------------------------------------------------------------- devices and target scoring (deploy, bench, eval)

def check_output_folder(path: str | os.PathLike | None, option: str = "--out") -> None:
    """An output folder that is an existing file is refused before any work (instead of a traceback at the end)."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder: pass a folder (it is created if missing)")


def devices_from_args(values: list[str] | None) -> list[str]:
    """Device names from repeated or comma-separated ``--device`` values (default: cpu-onnxruntime), once each."""
    names = [n.strip() for v in (values or ["cpu-onnxruntime"]) for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def add_target_scoring_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                                 calibration_default: int = 512, score_images: bool = True,
                                 plain_threads: bool = True) -> None:
    """How target images are used to score sub-networks (slimda eval, deploy and bench share these).

    ``plain_threads``: ``--threads`` also names the scoring threads (not where it means the device's threads).
    """
    from slimda.select.upem import DEFAULT_DISTANCE, DISTANCES

    parser.add_argument("--distance", choices=DISTANCES, default=DEFAULT_DISTANCE,
                        help=f"UPEM distance (default: {DEFAULT_DISTANCE})")
    parser.add_argument("--calibration-images", type=int, default=calibration_default,
                        help=f"target images that recalibrate BatchNorm (default: {calibration_default})")
    if score_images:
        parser.add_argument("--score-images", type=int, default=1024,
                            help="target images UPEM (and accuracy) are computed on; 0 = all (default: 1024)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="DataLoader processes reading target images (0: in this process); default: 0 for the "
                        "built-in digits, else the cores the threads leave, 1-8")
    parser.add_argument("--source-val", metavar="DATA",
                        help="labelled source images the bank never trained on (one folder per class), on which the "
                        "estimates of target accuracy are calibrated; default: the source images the run held out of "
                        "training (slimda-train --source-val), if any")
    parser.add_argument("--source-val-images", type=int, default=2000, metavar="N",
                        help="source images used from the split, at random; 0 = all (default: 2000)")
    names = ("--score-threads", "--threads") if plain_threads else ("--score-threads",)
    parser.add_argument(*names, dest="score_threads", type=int, metavar="N",
                        help="torch's CPU threads for scoring sub-networks; default: half the cores, so a job beside "
                        "it on the host does not make both collapse")
    add_score_compute_arguments(parser)


def add_score_compute_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where sub-networks are scored (BatchNorm recalibration and the forward pass over the target)."""
    from slimda.model.compute import AMPS, DEVICES, LAYOUTS

    parser.add_argument("--score-device", choices=DEVICES, default="auto",
                        help="where sub-networks are scored: auto = a CUDA GPU when there is one, else the CPU "
                        "(default: auto). The exported network is always recalibrated in fp32")
    parser.add_argument("--score-amp", choices=AMPS, default="auto",
                        help="autocast while scoring: auto = bf16 on a CUDA GPU (fp16 where it lacks bf16), off on "
                        "the CPU; bf16 on the CPU is about 2x faster for photo-sized banks (default: auto; "
                        "benchmarks/deploy_scale.py measures what it changes in the ranking)")
    parser.add_argument("--score-layout", choices=LAYOUTS, default="auto",
                        help="memory layout while scoring: auto = channels-last on a CUDA GPU, nchw on the CPU "
                        "(default: auto)")


def target_scoring_from_args(args: argparse.Namespace) -> TargetScoring:
    """``TargetScoring`` from ``--target``, the scoring options above, ``--head`` (if any) and ``--seed``."""
    from slimda.deploy.setup import TargetScoring
    from slimda.select.evaluate import DEFAULT_SELECT_BY

    return TargetScoring(args.target, getattr(args, "head", None), args.distance, args.calibration_images,
                         getattr(args, "score_images", 0), args.seed, args.workers, args.score_threads,
                         args.score_device, args.score_amp, args.score_layout, args.source_val,
                         args.source_val_images, getattr(args, "select_by", DEFAULT_SELECT_BY))


def add_int8_arguments(parser: argparse.ArgumentParser, search: bool = True) -> None:
    """How int8 candidates are calibrated (slimda deploy and bench, so that bench scores int8 as deploy did);
    ``search``: also the acceptance threshold and the finalists of deploy's search."""
    from slimda.deploy.precision import Int8Settings
    from slimda.export.quantize import CALIBRATION_METHODS

    int8 = parser.add_argument_group("int8 (with an int8 table or --precision int8 / auto)")
    int8.add_argument("--int8-method", choices=CALIBRATION_METHODS, default=Int8Settings.method,
                      help=f"ONNX Runtime's calibration method (default: {Int8Settings.method}, chosen by "
                      "benchmarks/precision_accuracy.py)")
    int8.add_argument("--int8-images", type=int, default=Int8Settings.images, metavar="N",
                      help=f"target images that calibrate int8 models, none of them among the scored ones "
                      f"(default: {Int8Settings.images})")
    if search:
        int8.add_argument("--int8-agreement", type=float, default=Int8Settings.agreement, metavar="SHARE",
                          help="least top-1 agreement of an int8 model with its fp32 network on held-out target "
                          f"images for it to be deployed (default: {Int8Settings.agreement})")
        int8.add_argument("--finalists", type=int, default=Int8Settings.finalists, metavar="N",
                          help="best sub-networks by fp32 UPEM that are quantized and scored as int8 (default: "
                          f"{Int8Settings.finalists})")


def int8_from_args(args: argparse.Namespace) -> Int8Settings:
    """``Int8Settings`` from the options of ``add_int8_arguments`` and ``--seed`` (checked)."""
    from slimda.deploy.precision import Int8Settings

    d = Int8Settings()
    return Int8Settings(args.int8_method, args.int8_images, agreement=getattr(args, "int8_agreement", d.agreement),
                        finalists=getattr(args, "finalists", d.finalists), seed=args.seed).check()
