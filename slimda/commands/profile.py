"""``slimda profile``: time ONNX models on a device; build a device's latency lookup table."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from slimda.commands.options import add_measure_arguments, options_from_args, parse_resolution
from slimda.errors import ConfigError
from slimda.profilers.devices import DeviceProfile

DESCRIPTION = """Time models on a target device: this host's CPU or another machine's over ssh (ONNX Runtime,
OpenVINO; --host runs slimda's worker there), ONNX Runtime's mobile format (desktop proxy, or a phone over
adb), a Jetson over ssh (trtexec) or this host's NVIDIA GPU (TensorRT Python API).

  --onnx FILE   times one model and prints one CSV row (header included) with latency_ms_p50/p90/p99,
                mean, std, cv, runs and the metadata (runtime version, precision used, threads, host...)
  --bank RUN    builds the device's latency lookup table for a trained bank (RUN/latency/DEVICE.csv);
                run it again after an interruption and it resumes where it stopped
  --arch NAME   the same for an untrained bank of an architecture (before training); needs --out

examples:
  slimda profile --list-devices
  slimda profile --device cpu-openvino --onnx model.onnx --threads 4
  slimda profile --device cpu-onnxruntime --onnx model.onnx --reference baseline.onnx
  slimda profile --device cpu-openvino --onnx model.onnx --host me@intel-box --remote-python /opt/venv/bin/python
  slimda profile --device ort-mobile --onnx model.onnx --adb R58M123ABC
  slimda profile --device jetson-nano --onnx model.onnx --host ubuntu@192.168.1.42
  slimda profile --device cpu-onnxruntime --bank runs/digits --validate 30
  slimda profile --device cpu-openvino --arch resnet18 --resolution 96 --out lut/resnet18-ov.csv --validate 30
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to profile")
    what.add_argument("--device", help="device profile to measure on (see --list-devices)")
    what.add_argument("--list-devices", action="store_true",
                      help="print the device profiles (name, runtime, where, precision, description) and exit")
    what.add_argument("--onnx", metavar="FILE", help="time this one ONNX model and print one CSV row")
    what.add_argument("--reference", metavar="FILE", help="with --onnx: time it in alternating ~20 ms chunks with "
                      "this ONNX model and add reference_ms and vs_reference (their ratio, steady even when the "
                      "machine's speed wanders) to the row; cpu-* and ort-mobile, here or with --host (not --adb)")
    what.add_argument("--bank", metavar="RUN", help="build the latency lookup table of the bank in this run "
                      "directory (written to RUN/latency/DEVICE.csv unless --out)")
    what.add_argument("--arch", metavar="NAME", help="build the lookup table of an untrained bank of this "
                      "architecture (digits-cnn, resnet18, resnet50, mobilenet_v2); needs --out")
    what.add_argument("--classes", type=int, default=10, help="with --arch: classes of the head (default: 10)")
    what.add_argument("--channels", type=int, help="with --arch: input channels (default: 1 for digits-cnn, "
                      "3 otherwise)")
    what.add_argument("--fit-configs", type=int, default=40, metavar="N",
                      help="with --bank/--arch: random sub-networks timed whole to fit the table's correction "
                      "from block sums to whole networks (default: 40)")
    what.add_argument("--rounds", type=int, default=3, metavar="N",
                      help="with --bank/--arch: time every whole network (fit set, uniform widths, --validate) in "
                      "N rounds spread over the build and keep its median; more rounds steady a noisy device "
                      "(default: 3)")
    what.add_argument("--unpaired", action="store_true",
                      help="with --bank/--arch: time every entry alone. By default an entry on a cpu-* or ort-mobile "
                      "device (here or with --host; not --adb) is timed in alternating ~20 ms chunks with a reference "
                      "network (the uniform 0.5x width) and the table keeps their ratio, which the machine's "
                      "changes of speed cancel out of; a phone (--adb) and a Jetson (trtexec) are always timed "
                      "unpaired")
    what.add_argument("--seed", type=int, default=0, help="seed of the fit and validation configurations")
    what.add_argument("--retry-failed", action="store_true",
                      help="with --bank/--arch: time again the entries that failed in an earlier run of the build")
    what.add_argument("--validate", type=int, metavar="K", default=0,
                      help="with --bank: measure K held-out random configurations end to end and report how well "
                      "the table predicts them (RUN/latency/DEVICE-validation.csv)")
    what.add_argument("--out", metavar="FILE", help="write the CSV here instead of stdout (--onnx) or the run "
                      "directory (--bank)")

    add_measure_arguments(parser)


def devices_text() -> str:
    """The --list-devices table, aligned."""
    from slimda.profilers.devices import device_table

    rows = device_table()
    cols = ["name", "runtime", "where", "precision", "precisions", "description"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols[:-1]}
    lines = ["  ".join(c.ljust(widths.get(c, 0)) for c in cols).rstrip()]
    for r in rows:
        lines.append("  ".join(r[c].ljust(widths.get(c, 0)) for c in cols).rstrip())
    return "\n".join(lines)


def csv_text(rows: list[dict[str, object]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def check_mode(args: argparse.Namespace) -> None:
    """Refuse options of the other mode (one model with --onnx, a table with --bank/--arch) rather than
    ignore them: a --reference silently dropped from a table build would cost a whole build."""
    if args.bank and args.arch:
        raise ConfigError("give --bank RUN (a trained bank) or --arch NAME (an untrained one), not both")
    if args.onnx and (args.bank or args.arch):
        raise ConfigError("--onnx times one model and --bank/--arch build a lookup table: give one of them")
    if args.reference and not args.onnx:
        raise ConfigError("--reference goes with --onnx (one model timed against another); a table build with "
                          "--bank/--arch picks its own reference network unless --unpaired")
    if args.onnx:
        table_only = [flag for flag, given in (("--unpaired", args.unpaired), ("--retry-failed", args.retry_failed),
                                               ("--validate", args.validate)) if given]
        if table_only:
            raise ConfigError(f"{', '.join(table_only)} only apply to a table build (--bank/--arch), not to --onnx")


def run_bank_profile(args: argparse.Namespace, device: DeviceProfile) -> int:
    """``--bank RUN`` (or ``--arch NAME --out FILE``): build the device's latency table, then validate it."""
    from slimda.latency.build import build_table, trained_table_target, untrained_bank
    from slimda.latency.validate import validate_table
    from slimda.profilers.measurement import check_target

    options = options_from_args(args)
    check_target(device, options)
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {args.rounds}")
    resolution = parse_resolution(args.resolution)
    if args.bank:
        bank, resolution, out = trained_table_target(args.bank, device.name, resolution, args.out,
                                                     options.precision)
    elif not args.out:
        raise ConfigError("--arch profiles an untrained bank: give --out FILE for its latency table")
    else:
        bank, out = untrained_bank(args.arch, args.classes, args.channels), Path(args.out)
    table = build_table(bank, device, options, out, resolution=resolution, seed=args.seed,
                        fit_configs=args.fit_configs, whole_rounds=args.rounds, retry_failed=args.retry_failed,
                        paired=not args.unpaired)
    print(", ".join(f"{k}={v}" for k, v in table.summary().items()))
    print(f"wrote {out}")
    if args.validate:
        val_out = out.with_name(f"{out.stem}-validation.csv")
        report = validate_table(table, bank, device, options, args.validate, val_out, seed=args.seed,
                                rounds=args.rounds)
        print(report.text())
        print(f"wrote {val_out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from slimda.profilers.devices import get_device, list_devices

    if args.list_devices:
        print(devices_text())
        return 0
    if not args.device:
        names = ", ".join(d.name for d in list_devices())
        raise ConfigError(f"choose a device with --device ({names}); --list-devices describes them")
    device = get_device(args.device)
    check_mode(args)
    if args.bank or args.arch:
        return run_bank_profile(args, device)
    if not args.onnx:
        raise ConfigError("give --onnx FILE to time one model, or --bank RUN to build a lookup table")
    options = options_from_args(args)
    from slimda.profilers.measurement import PAIRED_COLUMNS, ROW_COLUMNS, check_target, measure, measure_paired
    from slimda.tables import write_text_atomic

    check_target(device, options)
    if args.reference:
        row, columns = measure_paired(args.onnx, args.reference, device, options).to_row(), ROW_COLUMNS + PAIRED_COLUMNS
    else:
        row, columns = measure(args.onnx, device, options).to_row(), ROW_COLUMNS
    text = csv_text([row], columns)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
