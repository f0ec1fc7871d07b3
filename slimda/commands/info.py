"""``slimda info``: the width space of a backbone, with FLOPs and parameters per configuration."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """Show a backbone's width sites and a table of width configurations (largest, uniform widths,
smallest, and seeded random samples) with FLOPs (fvcore: one multiply-add = one FLOP) and parameters of
the extracted sub-network, heads included.

example:
  slimda info --arch digits-cnn
  slimda info --arch resnet50 --classes 1000 --resolution 224 --random 5 --csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="digits-cnn", help="backbone name (default: digits-cnn); see --list")
    parser.add_argument("--list", action="store_true", help="list the available backbones and exit")
    parser.add_argument("--classes", type=int, default=10, help="number of classes of the head (default: 10)")
    parser.add_argument("--channels", type=int, default=None,
                        help="input channels (default: the backbone's, 1 for digits-cnn, 3 otherwise)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="square input size in pixels (default: the backbone's, 28 or 224)")
    parser.add_argument("--widths", default=None,
                        help="width ratio grid, '0.25,0.5,1' or 'start:stop:step' (default: 0.25:1:0.125)")
    parser.add_argument("--random", type=int, default=3, help="number of random configurations to add (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random configurations (default: 0)")
    parser.add_argument("--csv", action="store_true", help="print CSV instead of an aligned table")


def run(args: argparse.Namespace) -> int:
    from slimda.backbones import backbone_cfg, list_backbones
    from slimda.model.bank import ModelBank
    from slimda.model.cost import count_flops, count_params
    from slimda.model.space import DEFAULT_RATIOS, parse_ratios
    from slimda.tables import print_table

    if args.list:
        print("\n".join(list_backbones()))
        return 0
    channels = args.channels or backbone_cfg(args.arch).in_channels
    ratios = parse_ratios(args.widths) if args.widths else DEFAULT_RATIOS
    bank = ModelBank(args.arch, args.classes, channels, ratios).eval()
    space = bank.space
    size = args.resolution or bank.backbone.default_input_size
    print(f"# {args.arch}: {len(space.sites)} width sites, {space.size():,} configurations, "
          f"input {channels}x{size}x{size}, ratios {list(space.ratios)}", file=sys.stderr)
    print("# sites: " + ", ".join(f"{s.name}={list(space.choices[s.name])}" for s in space.sites), file=sys.stderr)
    named = [("largest", space.largest())]
    named += [(f"uniform {r:g}", space.uniform(r)) for r in sorted({0.75, 0.5, 0.25} & set(ratios), reverse=True)]
    named += [("smallest", space.smallest())]
    named += [(f"random {i}", c) for i, c in enumerate(space.sample_many(args.random, args.seed), start=1)]
    rows = []
    for kind, config in named:
        net = bank.extract(config)
        rows.append({
            "kind": kind,
            "config_id": config.id,
            "width": round(space.ratio_of(config), 3),
            "flops_m": round(count_flops(net, (1, channels, size, size)) / 1e6, 3),
            "params_m": round(count_params(net) / 1e6, 4),
        })
    print_table(rows, csv_format=args.csv)
    return 0
