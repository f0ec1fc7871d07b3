"""One slimda-deploy at the real job's scale, and what the faster scoring settings cost in ranking.

1. ``timing``: a ResNet-50 and a MobileNetV2 bank at 224x224 (random weights stand in for ImageNet-initialised
   banks: they cost the same to score) deploy to cpu-onnxruntime under a FLOPs budget halfway through the
   bank's range, with 800 target photos (crops of scikit-learn's two sample photos, 300-420 px). Wall time is
   split into loading the target, the search (BatchNorm recalibration and a forward pass per candidate: the
   scoring), export/convert, and the re-measurement on the device. Each scoring setting is one row:
   ``default`` is what slimda-deploy does without options (512 calibration images, every one of the 800 photos
   scored, population 24 x 8 generations); ``practical`` adds the options that make a CPU deploy practical.
   A setting too slow to run whole here (``--project``) is timed on a few candidates and its search time
   projected from the candidates a real search evaluated; such rows say ``projected``.
2. ``ranking``: on a trained bank whose target has labels (default: the quickstart's mnist -> digits bank),
   every setting scores the same candidates as the reference (fp32, NCHW, default image counts): Spearman's
   rho of UPEM against the reference's, the largest change of a candidate's top-1, and the regret of each
   setting's pick under FLOPs budgets at 25/50/75 % of the range (reference top-1 points and UPEM lost). A
   second check runs the numeric settings on the photo-scale banks of part 1 (their UPEM only).

    python benchmarks/deploy_scale.py                                   # this CPU (about 30 min on 2 cores)
    python benchmarks/deploy_scale.py --score-device cuda --no-project  # the GPU machine: every deploy whole
    python benchmarks/deploy_scale.py --part ranking --bank quickstart-out/run --target digits

Writes benchmarks/results/deploy_scale[_TAG].csv and deploy_scale_ranking[_TAG].csv and prints them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from slimda.data.preprocessing import IMAGENET_MEAN_STD, Preprocessing, photo_resize
from slimda.data.sample_domains import CLASSES, make_photo_domains
from slimda.deploy.deployer import DeployOptions
from slimda.deploy.setup import BankRun, TargetScoring
from slimda.model.bank import BankMeta, ModelBank, save_bank
from slimda.model.cost import BankCosts
from slimda.model.space import WidthConfig
from slimda.profilers.measurement import MeasureOptions
from slimda.select.budget import Budget, Budgets
from slimda.select.evaluate import TargetScorer
from slimda.select.search import SearchSettings
from slimda.tables import print_table, write_csv_atomic

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Setting:
    """A way of scoring candidates: where and how (``TargetScoring``'s fields) and the search's size."""

    name: str
    amp: str = "auto"
    layout: str = "auto"
    calibration_images: int = 512  # slimda-deploy's defaults
    score_images: int = 1024
    population: int = 24
    generations: int = 8

    def scoring(self, target: str, device: str, threads: int | None = None) -> TargetScoring:
        return TargetScoring(target, calibration_images=self.calibration_images, score_images=self.score_images,
                             threads=threads, device=device, amp=self.amp, layout=self.layout)

    def search(self) -> SearchSettings:
        return SearchSettings(population=self.population, generations=self.generations)


REFERENCE = Setting("fp32-nchw", amp="off", layout="nchw")
SETTINGS = {
    "default": Setting("default"),  # auto: fp32 NCHW on the CPU, bf16 channels-last on a GPU
    "fp32-nchw": REFERENCE,
    "fp32-channels-last": Setting("fp32-channels-last", amp="off", layout="channels-last"),
    "bf16-channels-last": Setting("bf16-channels-last", amp="bf16", layout="channels-last"),
    "fewer-images": Setting("fewer-images", calibration_images=128, score_images=256),
    "practical": Setting("practical", amp="bf16", layout="channels-last", calibration_images=128,
                         score_images=256, population=16, generations=5),
}


def photo_bank(root: Path, arch: str, resolution: int) -> Path:
    """A run folder with a randomly initialised ``arch`` bank at ``resolution`` under the photo recipe."""
    run = root / f"{arch}-{resolution}"
    if not (run / "bank.pt").is_file():
        torch.manual_seed(0)
        bank = ModelBank(arch, len(CLASSES), 3).eval()
        prep = Preprocessing((resolution, resolution), 3, *IMAGENET_MEAN_STD, resize=photo_resize(resolution))
        save_bank(bank, run / "bank.pt", BankMeta(CLASSES, prep, "ca"))
    return run


def flops_budget(run: BankRun, share: float) -> float:
    costs = BankCosts(run.bank, run.meta.input_chw)
    low, high = costs.flops(run.bank.space.smallest()), costs.flops(run.bank.space.largest())
    return low + share * (high - low)


def timed_deploy(run: BankRun, target: str, setting: Setting, device: str, out: Path,
                 threads: int | None) -> dict[str, object]:
    """One deploy to cpu-onnxruntime under a FLOPs budget halfway through the range, its time split in parts."""
    measured = {"seconds": 0.0}

    def measure(exported, dev, opts, table):
        from slimda.latency.build import measure_like_table

        t0 = time.perf_counter()
        try:
            return measure_like_table(exported.onnx, table, run.bank, dev, opts, exported.artifact)
        finally:
            measured["seconds"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    scorer = run.scorer(setting.scoring(target, device, threads))
    load_s = time.perf_counter() - t0
    budget = flops_budget(run, 0.5)
    options = DeployOptions(measure_options=MeasureOptions(min_time_s=0.5), settings=setting.search(),
                            measure_with=measure, progress=False)
    deployment = run.deployer(scorer, options, out).deploy("cpu-onnxruntime",
                                                           Budgets(flops=Budget("flops", budget, f"{budget:.0f}")))
    provenance = deployment.manifest.provenance
    search_s, total, scored = provenance.search.seconds, provenance.deploy_seconds, provenance.search.candidates_scored
    return {"kind": "measured", "score_compute": scorer.compute.label, "candidates": scored,
            "load_target_s": round(load_s, 2), "search_s": round(search_s, 2),
            "per_candidate_s": round(search_s / max(scored, 1), 3),
            "export_convert_s": round(total - search_s - measured["seconds"], 2),
            "measure_s": round(measured["seconds"], 2), "deploy_s": round(load_s + total, 2),
            "config_id": deployment.manifest.network.config_id, "latency_ms": deployment.manifest.latency.measured_ms}


def projected_deploy(run: BankRun, target: str, setting: Setting, device: str, threads: int | None,
                     candidates: int, practical: dict[str, object]) -> dict[str, object]:
    """A setting too slow to run whole: its scoring timed on three candidates spread over the widths, its search
    projected to ``candidates`` evaluations; export and re-measurement do not depend on scoring (taken from the
    measured row)."""
    t0 = time.perf_counter()
    scorer = run.scorer(setting.scoring(target, device, threads))
    load_s = time.perf_counter() - t0
    space = run.bank.space
    sample = [space.uniform(r) for r in (0.25, 0.5, 0.75)]  # the anchor (full width) is scored with the first
    t0 = time.perf_counter()
    scorer.upem(space.largest())
    anchor_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for config in sample:
        scorer.upem(config)
    per_candidate = (time.perf_counter() - t0) / len(sample)
    search_s = anchor_s + per_candidate * candidates
    export_s, measure_s = float(practical["export_convert_s"]), float(practical["measure_s"])
    return {"kind": "projected", "score_compute": scorer.compute.label, "candidates": candidates,
            "load_target_s": round(load_s, 2), "search_s": round(search_s, 1),
            "per_candidate_s": round(per_candidate, 3), "export_convert_s": export_s, "measure_s": measure_s,
            "deploy_s": round(load_s + search_s + export_s + measure_s, 1), "config_id": "", "latency_ms": ""}


def timing_rows(args, root: Path) -> list[dict[str, object]]:
    _, target = make_photo_domains(root / "photos", per_class=args.photos // 2)
    rows = []
    for arch in args.archs.split(","):
        run = BankRun.open(photo_bank(root, arch, args.resolution))
        base = {"arch": arch, "resolution": args.resolution, "photos": args.photos, "score_device": args.score_device,
                "threads": args.threads, "machine": platform.processor() or platform.machine()}
        measured: dict[str, dict[str, object]] = {}
        for name in args.settings.split(","):
            setting = SETTINGS[name]
            if args.project and name != "practical" and "practical" in measured:
                result = projected_deploy(run, str(target), setting, args.score_device, args.threads,
                                          int(measured["practical"]["candidates"] * _search_scale(setting)),
                                          measured["practical"])
            else:
                result = timed_deploy(run, str(target), setting, args.score_device, root / "deploy" / arch / name,
                                      args.threads)
                measured[name] = result
            rows.append({**base, "setting": name, "calibration_images": setting.calibration_images,
                         "score_images": min(setting.score_images, args.photos) or args.photos,
                         "population": setting.population, "generations": setting.generations, **result})
            print_table([rows[-1]])
    return rows


def _search_scale(setting: Setting) -> float:
    """How many more candidates a search of ``setting``'s size evaluates than the practical one (by the
    settings' most candidates: population + generations x 16 children)."""
    practical = SETTINGS["practical"]
    most = lambda s: s.population + s.generations * 16  # noqa: E731
    return most(setting) / most(practical)


# ---------------------------------------------------------------------------------------------------- ranking

def ranking_rows(run: BankRun, target: str, configs: list[WidthConfig], reference: Setting,
                 settings: list[Setting], device: str, label: str) -> list[dict[str, object]]:
    """Every setting against ``reference`` (scored on the CPU) on the same candidates; choice regret under FLOPs
    budgets at 25/50/75 % of the range."""
    costs = BankCosts(run.bank, run.meta.input_chw)
    flops = np.array([costs.flops(c) for c in configs])
    budgets = [flops_budget(run, share) for share in (0.25, 0.5, 0.75)]
    scored: dict[str, tuple[TargetScorer, list, float]] = {}
    for name, setting, where in [("reference", reference, "cpu"), *((s.name, s, device) for s in settings)]:
        scorer = run.scorer(setting.scoring(target, where))
        t0 = time.perf_counter()
        scores = [scorer.score(c) for c in configs]
        scored[name] = (scorer, scores, time.perf_counter() - t0)
    _, ref, ref_s = scored["reference"]
    ref_upem = np.array([s.upem for s in ref])
    ref_acc = np.array([np.nan if s.target_acc is None else s.target_acc for s in ref])
    rows = []
    for name, (scorer, scores, seconds) in scored.items():
        if name == "reference":
            continue
        upem = np.array([s.upem for s in scores])
        acc = np.array([np.nan if s.target_acc is None else s.target_acc for s in scores])
        regret_acc, regret_upem, changed = [], [], 0
        for limit in budgets:
            fits = np.flatnonzero(flops <= limit)
            best, pick = fits[np.argmin(ref_upem[fits])], fits[np.argmin(upem[fits])]
            changed += int(best != pick)
            regret_upem.append(ref_upem[pick] - ref_upem[best])
            regret_acc.append(100 * (ref_acc[best] - ref_acc[pick]))
        labelled = not np.isnan(ref_acc).any()
        rows.append({
            "bank": label, "setting": name, "score_compute": scorer.compute.label,
            "calibration_images": sum(len(x) for x in scorer.target.calibration), "score_images": scorer.target.count,
            "candidates": len(configs), "spearman_upem": round(float(spearmanr(ref_upem, upem).statistic), 4),
            "max_abs_dtop1_pts": round(float(np.max(np.abs(acc - ref_acc))) * 100, 2) if labelled else "",
            "picks_changed": f"{changed} of {len(budgets)}",
            "regret_top1_pts": round(float(np.mean(regret_acc)), 2) if labelled else "",
            "regret_upem": round(float(np.mean(regret_upem)), 6),
            "seconds": round(seconds, 1), "reference_seconds": round(ref_s, 1)})
        print_table([rows[-1]])
    return rows


def candidates(run: BankRun, count: int, seed: int = 0) -> list[WidthConfig]:
    space = run.bank.space
    fixed = list(dict.fromkeys([space.smallest(), *(space.uniform(r) for r in space.ratios), space.largest()]))
    return fixed + space.sample_many(max(count - len(fixed), 0), seed, exclude=fixed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("timing", "ranking", "both"), default="both")
    parser.add_argument("--archs", default="resnet50,mobilenet_v2")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--photos", type=int, default=800, help="target photos (default: 800)")
    parser.add_argument("--settings", default="practical,default,fp32-channels-last,bf16-channels-last",
                        help=f"timing settings, comma-separated, practical first (of {', '.join(SETTINGS)})")
    parser.add_argument("--score-device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="scoring threads (default: every core; slimda's own default is half of them)")
    parser.add_argument("--project", action=argparse.BooleanOptionalAction, default=True,
                        help="time settings other than 'practical' on a few candidates and project their search "
                        "(default: on; --no-project deploys each whole, for the GPU machine)")
    parser.add_argument("--bank", action="append", help="trained bank for the ranking check (repeatable; default: "
                        "quickstart-out/run)")
    parser.add_argument("--target", action="append", help="each --bank's labelled target (default: digits)")
    parser.add_argument("--ranking-configs", type=int, default=40)
    parser.add_argument("--photo-ranking-configs", type=int, default=8,
                        help="candidates of the photo-scale numeric check (0: skip it)")
    parser.add_argument("--workdir", help="where banks and photos are made (default: a temporary folder)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--results", default=str(RESULTS), help="folder the CSVs go to (default: benchmarks/results)")
    args = parser.parse_args()
    suffix = f"_{args.tag}" if args.tag else ""
    scratch = tempfile.TemporaryDirectory(prefix="slimda-deploy-scale-")
    root = Path(args.workdir or scratch.name)
    if args.part in ("timing", "both"):
        rows = timing_rows(args, root)
        path = write_csv_atomic(Path(args.results) / f"deploy_scale{suffix}.csv", rows)
        print(f"wrote {path}")
    if args.part in ("ranking", "both"):
        banks, targets = args.bank or ["quickstart-out/run"], args.target or ["digits"]
        if len(banks) != len(targets):
            parser.error("give one --target per --bank")
        names = ("fp32-channels-last", "bf16-channels-last", "fewer-images", "practical")
        rows = []
        for bank, target in zip(banks, targets):
            trained = BankRun.open(bank)
            rows += ranking_rows(trained, target, candidates(trained, args.ranking_configs), REFERENCE,
                                 [SETTINGS[n] for n in names], args.score_device,
                                 f"{trained.bank.arch} -> {Path(target).name} (trained)")
        if args.photo_ranking_configs:
            _, target = make_photo_domains(root / "photos", per_class=args.photos // 2)
            # the numeric settings alone, every one on the same 128 + 256 images
            fewer = {"calibration_images": 128, "score_images": 256}
            numeric = [replace(SETTINGS[n], **fewer) for n in ("fp32-channels-last", "bf16-channels-last")]
            for arch in args.archs.split(","):
                run = BankRun.open(photo_bank(root, arch, args.resolution))
                rows += ranking_rows(run, str(target), candidates(run, args.photo_ranking_configs),
                                     replace(REFERENCE, **fewer), numeric, args.score_device,
                                     f"{arch} {args.resolution} (random weights)")
        path = write_csv_atomic(Path(args.results) / f"deploy_scale_ranking{suffix}.csv", rows)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
