"""FLOPs and parameters of every backbone's bank at uniform widths and at its smallest configuration.

Writes benchmarks/results/bank_flops.csv. Heads have 1000 classes and inputs are the backbones' own
sizes (224 for the ImageNet backbones, 28 for digits-cnn), so the rows compare with published numbers:
ResNet-50 full width ≈ 4.1 GFLOPs (multiply-adds) and 25.6 M parameters; slimmable networks' 0.25×
ResNet-50 ≈ 278 MFLOPs.

    python benchmarks/bank_flops.py
"""

from __future__ import annotations

import platform
from pathlib import Path

from slimda.backbones import backbone_cfg, list_backbones
from slimda.model.bank import ModelBank
from slimda.model.cost import count_flops, count_params
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results" / "bank_flops.csv"


def main() -> None:
    rows = []
    for arch in list_backbones():
        cfg = backbone_cfg(arch)
        channels, size = cfg.in_channels, cfg.input_size
        bank = ModelBank(arch, 1000, channels).eval()
        configs = [(f"uniform {r}", bank.space.uniform(r)) for r in (0.25, 0.5, 0.75, 1.0)]
        configs.append(("smallest", bank.space.smallest()))
        for kind, config in configs:
            net = bank.extract(config, head="ca")
            rows.append({
                "arch": arch,
                "config": kind,
                "config_id": config.id,
                "input": f"{channels}x{size}x{size}",
                "classes": 1000,
                "flops_m": round(count_flops(net, (1, channels, size, size)) / 1e6, 2),
                "params_m": round(count_params(net) / 1e6, 3),
                "machine": platform.node(),
            })
    write_csv_atomic(RESULTS, rows)
    print_table([{k: v for k, v in r.items() if k not in ("config_id", "machine")} for r in rows])
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
