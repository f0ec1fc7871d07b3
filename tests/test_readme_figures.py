"""The README's benchmark figures are the committed results': each figure it quotes is recomputed here from
``benchmarks/results/*.csv`` and must appear in the README as written (line breaks aside). A rerun that changes
a CSV fails this test until the README says what the new CSV holds.

One function per figure, in the README's order, each under a comment naming the command that writes its CSV."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def readme() -> str:
    return re.sub(r"\s+", " ", (ROOT / "README.md").read_text())


def pct(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def at_most(x: float) -> float:
    """The least one-decimal number ≥ x: what the README may write after "≤"."""
    return math.ceil(round(10 * x, 6)) / 10


def at_least(x: float) -> float:
    """The greatest one-decimal number ≤ x: what the README may write after "≥"."""
    return math.floor(round(10 * x, 6)) / 10


def span(x: pd.Series, digits: int = 1) -> str:
    return f"{x.min():.{digits}f}–{x.max():.{digits}f}×"


# python benchmarks/latency_noise.py --name latency_noise_paired
def latency_noise_paired() -> str:
    rows = pd.read_csv(RESULTS / "latency_noise_paired.csv")
    paired = rows.loc[rows["mode"] == "paired", "mean_abs_dev_pct"]  # mean |round / median - 1| per case
    return f"the ratio repeats within ~{paired.mean():.0f} % (`benchmarks/latency_noise.py`)"


# python benchmarks/train_regression.py (--jobs 2 by default: two single-thread runs side by side)
def train_regression_cost() -> str:
    rows = pd.read_csv(RESULTS / "train_regression.csv")
    runs = rows.drop_duplicates(["pair", "method", "seed"])
    minutes = runs["train_seconds"].sum() / 2 / 60  # the wall time of two runs at a time, at least
    seeds = " and ".join(str(s) for s in sorted(rows["seed"].unique()))
    return f"({rows['iters'].iloc[0]} steps, seeds {seeds}, ~{round(minutes, -1):.0f} min on 2 cores)"


# python benchmarks/train_regression.py --update-baseline
def train_regression() -> str:
    rows = pd.read_csv(RESULTS / "train_regression.csv")
    full = rows[rows["width"] == 1.0].groupby(["pair", "method"])["target_acc_pct"].mean()
    parts = [f"{pair} {full[(pair, 'slimda')]:.1f} vs {full[(pair, 'source-only')]:.1f}"
             for pair in dict.fromkeys(rows["pair"])]
    return "full width, bank vs source-only, mean of 2 seeds: " + "; ".join(parts)


# python benchmarks/train_regression.py --update-baseline
def train_regression_seed_noise() -> str:
    rows = pd.read_csv(RESULTS / "train_regression.csv")
    spread = rows.groupby(["pair", "method", "width"])["target_acc_pct"].agg(lambda s: s.max() - s.min())
    full = spread.xs(1.0, level="width")
    narrower = spread[spread.index.get_level_values("width") < 1.0]
    return (f"At full width two seeds differ by up to {full.max():.0f} points here (up to {narrower.max():.0f} "
            "at narrower widths)")


# python benchmarks/profiler_agreement.py
def profiler_agreement() -> str:
    ratios = pd.read_csv(RESULTS / "profiler_agreement.csv")["ratio"]
    return f"ratios {ratios.min():.3f}–{ratios.max():.3f} over {len(ratios)} models"


# python benchmarks/lut_accuracy.py
def lut_accuracy() -> str:
    rows = pd.read_csv(RESULTS / "lut_accuracy.csv")
    chosen = rows.groupby(["arch", "input", "device"], sort=False).head(1)["within_10pct"]  # the table's own form
    return f"{pct(chosen.min())}–{pct(chosen.max())} % within ±10 % on every case"


# python benchmarks/lut_accuracy.py --precision int8 --name lut_accuracy_int8 (the three cases the README names)
def lut_accuracy_int8() -> str:
    rows = pd.read_csv(RESULTS / "lut_accuracy_int8.csv")
    chosen = rows.groupby(["arch", "input", "device"], sort=False).head(1)["within_10pct"]  # the table's own form
    return f"int8 (digits-cnn on both, resnet18 64² on OpenVINO) {pct(chosen.min())}–{pct(chosen.max())} %"


# python benchmarks/bank_vs_individual.py --objective confusion --name bank_vs_individual_confusion
def bank_vs_individual() -> str:
    runs = pd.read_csv(RESULTS / "bank_vs_individual_confusion.csv")
    s = pd.read_csv(RESULTS / "bank_vs_individual_confusion_summary.csv")
    s = s[s["head"] == "ca"].set_index(["method", "width"])

    def accs(method: str) -> str:
        return "/".join(f"{s.loc[(method, w), 'target_acc_pct_mean']:.1f}" for w in (0.25, 0.5, 0.75, 1.0))

    seconds = s["train_seconds_mean"]  # per seed: the bank's run against the four widths' runs summed
    return (f"the bank against widths trained alone and source-only ({runs['seed'].nunique()} seeds). "
            f"{runs['objective'].iloc[0].capitalize()} objective, {runs['iters'].iloc[0]} steps, mean target "
            f"accuracy at widths 0.25/0.5/0.75/1: bank {accs('a_slimda_bank')} %, widths alone {accs('c_alone')} %, "
            f"source-only {accs('d_source_only')} %; the bank trains in "
            f"{seconds['a_slimda_bank'].iloc[0] / seconds['c_alone'].iloc[0]:.2f}× the time of the four widths alone")


# python benchmarks/search_regret.py --bank quickstart-out/run
def search_regret() -> str:
    regret = pd.read_csv(RESULTS / "search_regret.csv")["regret_searched_pts"]  # against the searched oracle
    return f"the accuracy given up by choosing by UPEM ({regret.mean():.1f} points on average)"


# python benchmarks/deploy_budget_sweep.py
def deploy_budget_sweep() -> str:
    s = pd.read_csv(RESULTS / "deploy_budget_sweep_summary.csv").set_index("device")
    ort, ov = s.loc["cpu-onnxruntime"], s.loc["cpu-openvino"]
    within = [round(r["within_5pct_share"] * r["deploys"]) for r in (ort, ov)]
    rows = pd.read_csv(RESULTS / "deploy_budget_sweep.csv")
    worst = rows.loc[~rows["within_5pct"], "measured_over_budget"].max()
    return (f"within budget × 1.05 on {within[0]} of {int(ort['deploys'])} deploys on ONNX Runtime and {within[1]} "
            f"of {int(ov['deploys'])} on OpenVINO (the miss, {worst:.2f}× its budget")


# python benchmarks/deploy_budget_sweep.py
def deploy_budget_sweep_time() -> str:
    seconds = pd.read_csv(RESULTS / "deploy_budget_sweep_summary.csv")["deploy_seconds_mean"]
    return f"{seconds.min():.0f}–{seconds.max():.0f} s per deploy on average"


# python benchmarks/precision_speedup.py
def precision_speedup() -> str:
    rows = pd.read_csv(RESULTS / "precision_speedup.csv")
    rows["speedup"] = 1 / rows["vs_fp32"]  # the CSV's speedup column is already rounded to 2 places
    resnet = rows[rows["arch"] == "resnet18"]
    uint8 = resnet[resnet["activations"] == "uint8"].groupby("device")["speedup"]
    digits = rows[(rows["arch"] == "digits-cnn") & (rows["activations"] == "uint8")
                  & (rows["device"] == "cpu-onnxruntime")]
    slower = "/".join(f"{w:g}" for w in digits.loc[digits["speedup"] < 1, "width"])
    return (f"resnet18 at 96² in int8 {span(uint8.get_group('cpu-onnxruntime'))} faster on ONNX Runtime, "
            f"{span(uint8.get_group('cpu-openvino'))} on OpenVINO (uint8 activations), "
            f"{span(resnet.loc[resnet['precision'] == 'bf16', 'speedup'])} in bf16 (this CPU has AVX-512 BF16); "
            f"digits-cnn in int8 {span(digits['speedup'])} on ONNX Runtime, slower than fp32 at width {slower}.")


# python benchmarks/openvino_int8_paths.py --bank RUN --archs resnet18,mobilenet_v2
def openvino_int8_paths() -> str:
    rows = pd.read_csv(RESULTS / "openvino_int8_paths.csv")
    nncf = rows.groupby("arch")["nncf_vs_qdq"]
    equal = [a for a in ("digits-cnn", "resnet18") if (nncf.get_group(a) - 1).abs().max() <= 0.05]  # within ±5 %
    bank = rows[rows["case"] == "bank"]  # the trained bank: the only rows with accuracies
    return (f"equal speed on {' and '.join(equal)}, NNCF {span(nncf.get_group('mobilenet_v2'), 2)} slower on "
            f"MobileNetV2, agreement with fp32 {100 * bank['qdq_agreement'].mean():.2f} % (QDQ) and "
            f"{100 * bank['nncf_agreement'].mean():.2f} % (NNCF)")


# python benchmarks/precision_accuracy.py --bank RUN (the quickstart bank; --tag _no_seed on a --no-seed bank)
def precision_accuracy() -> str:
    s = pd.concat([pd.read_csv(RESULTS / f"precision_accuracy{tag}_summary.csv") for tag in ("", "_no_seed")])
    default = pd.read_csv(RESULTS / "precision_accuracy_summary.csv").query("default").iloc[0]
    return (f"{s['configs'].min()} sub-networks quantized as deploy does: on the digits banks int8 lost "
            f"≤ {at_most(s['drop_max_pts'].max())} points (full width ≤ {at_most(s['drop_full_width_pts'].max())}), "
            f"agreement ≥ {at_least(100 * s['agreement_min'].min())} %; every calibration setting was within noise "
            f"and the rule picked {default['method']} on {default['images']} images (the default)")


# python benchmarks/deploy_precision_sweep.py --bank RUN (the quickstart bank; --tag _no_seed on a --no-seed bank)
def deploy_precision_sweep() -> str:
    runs = [pd.read_csv(RESULTS / f"deploy_precision_sweep{tag}.csv") for tag in ("", "_no_seed")]
    budgets = {run.groupby("device")["budget_ms"].nunique().max() for run in runs}.pop()  # the same in both
    deployed = pd.concat(runs).query("status == 'ok'")
    within = "every deploy" if deployed["within_5pct"].all() else f"{deployed['within_5pct'].sum()} of {len(deployed)}"
    return f"`--precision auto` against fp32 at {budgets} budgets per CPU device: {within} within budget × 1.05"


# python benchmarks/deploy_precision_sweep.py --bank RUN --tag _no_seed
def deploy_precision_gain() -> str:
    ov = pd.read_csv(RESULTS / "deploy_precision_sweep_no_seed_summary.csv").set_index("device").loc["cpu-openvino"]
    never = "never below fp32" if ov["acc_gain_min_pts"] >= 0 else f"down to {ov['acc_gain_min_pts']:+.1f}"
    return f"auto gained {ov['acc_gain_mean_pts']:+.1f} points on average on OpenVINO ({never})"


# python benchmarks/deploy_precision_sweep.py --bank RUN (the quickstart bank; --tag _no_seed on a --no-seed bank)
def deploy_precision_floor() -> str:
    s = pd.concat([pd.read_csv(RESULTS / f"deploy_precision_sweep{tag}_summary.csv") for tag in ("", "_no_seed")])
    floor = s.groupby("device")["floor_int8_over_fp32"]
    return (f"OpenVINO's int8 floor is {span(floor.get_group('cpu-openvino'), 2)} fp32's, "
            f"ONNX Runtime's {span(floor.get_group('cpu-onnxruntime'))}")


# python benchmarks/input_pipeline.py
def input_pipeline() -> str:
    rows = pd.read_csv(RESULTS / "input_pipeline.csv")
    pipe = rows[rows["kind"] == "pipeline"]
    cache = pipe["cache_images"].astype(str) == "True"
    plain, cached = (pipe[c].set_index("workers")["images_per_s"] for c in (~cache, cache))
    step = rows[rows["kind"] == "train_step"].set_index("arch")["images_per_s"]

    def each(x: pd.Series) -> str:
        return " / ".join(f"{v:.0f}" for v in x)

    return (f"{each(plain)} images/s with {each(plain.index.to_series())} workers, {each(cached)} with "
            f"`--cache-images` (decoding is the cost the cache removes, {span(cached / plain)}); a ResNet-50 bank "
            f"step at 96² consumes {step['resnet50']:.1f} images/s, MobileNetV2 {step['mobilenet_v2']:.1f}")


# python benchmarks/train_throughput.py
def train_throughput_ratio() -> str:
    bank = pd.read_csv(RESULTS / "train_throughput.csv").query("part == 'bank'").set_index(["arch", "amp"])
    r = bank["bank_vs_plain"]
    return (f"bank/plain {r['resnet50', 'off']:.3f} (ResNet-50) and {r['mobilenet_v2', 'off']:.3f} (MobileNetV2) "
            f"in fp32, {r['resnet50', 'bfloat16']:.3f} and {r['mobilenet_v2', 'bfloat16']:.3f} under bf16")


# python benchmarks/train_throughput.py (peak_mb_* are MiB: bytes / 2**20)
def train_throughput_memory() -> str:
    bank = pd.read_csv(RESULTS / "train_throughput.csv").query("part == 'bank'")
    r50 = bank[bank["arch"] == "resnet50"].set_index("amp")

    def gib(mib: float) -> str:
        return f"{mib / 1024:.2g} GiB"

    return (f"is {gib(r50.loc['off', 'peak_mb_joint'])} in fp32, {gib(r50.loc['bfloat16', 'peak_mb_joint'])} in "
            f"bf16, {gib(r50.loc['bfloat16', 'peak_mb_per-model'])} with `--backward per-model` (bf16), which costs "
            f"{span(bank['per_model_vs_joint'], 2)} the joint step's time here")


# python benchmarks/train_throughput.py
def train_throughput_shared_host() -> str:
    host = pd.read_csv(RESULTS / "train_throughput.csv").query("part == 'shared_host'").set_index("threads_rule")
    every, half = host.loc["torch default (every core)"], host.loc["slimda default (half)"]
    return (f"{every['steps_per_min_alone']:.3g} → {every['steps_per_min_shared']:.3g} steps/min each at torch's "
            f"default threads (every core), {half['steps_per_min_alone']:.3g} → {half['steps_per_min_shared']:.3g} "
            "at slimda's default (half the cores)")


# python benchmarks/bank_flops.py
def bank_flops() -> str:
    rows = pd.read_csv(RESULTS / "bank_flops.csv").set_index(["arch", "config"])
    full, quarter = rows.loc[("resnet50", "uniform 1.0")], rows.loc[("resnet50", "uniform 0.25")]
    side = full["input"].split("x")[-1]
    return (f"({full['classes']} classes, {side}² inputs): ResNet-50 {full['flops_m']:.1f} MFLOPs / "
            f"{full['params_m']:.3f} M params at full width (torchvision: the same), {quarter['flops_m']:.1f} "
            "MFLOPs at 0.25×")


# python benchmarks/deploy_scale.py --part timing
def deploy_scale() -> str:
    d = pd.read_csv(RESULTS / "deploy_scale.csv").set_index(["arch", "setting"])
    r, m = "resnet50", "mobilenet_v2"
    per = [d.loc[(a, "default"), "per_candidate_s"] for a in (r, m)]
    faster = [p / d.loc[(a, "bf16-channels-last"), "per_candidate_s"] for p, a in zip(per, (r, m))]
    practical = [d.loc[(a, "practical")] for a in (r, m)]
    return (f"the search would take {d.loc[(r, 'default'), 'search_s'] / 3600:.1f} h for ResNet-50 and "
            f"{d.loc[(m, 'default'), 'search_s'] / 60:.0f} min for MobileNetV2 ({per[0]:.1f} and {per[1]:.1f} s per "
            f"candidate, projected from timed candidates); `--score-amp bf16 --score-layout channels-last` scores "
            f"{faster[0]:.1f}× and {faster[1]:.1f}× faster; adding `--calibration-images 128 --score-images 256 "
            f"--population 16 --generations 5` makes the whole deploy {practical[0]['deploy_s'] / 60:.1f} min and "
            f"{practical[1]['deploy_s'] / 60:.1f} min (measured; export and conversion "
            f"{practical[0]['export_convert_s']:.1f} s and {practical[1]['export_convert_s']:.1f} s, re-measurement "
            f"{practical[0]['measure_s']:.1f} s and {practical[1]['measure_s']:.1f} s)")


# python benchmarks/deploy_scale.py --part ranking --bank quickstart-out/run --target digits --bank B --target T
def deploy_scale_ranking() -> str:
    d = pd.read_csv(RESULTS / "deploy_scale_ranking.csv")
    trained = d[d["bank"].str.endswith("(trained)")]
    bf16, few = (trained[trained["setting"] == s] for s in ("bf16-channels-last", "fewer-images"))

    def changed(rows: pd.DataFrame) -> tuple[int, int]:
        counts = [tuple(int(x) for x in str(v).split(" of ")) for v in rows["picks_changed"]]
        return sum(c for c, _ in counts), sum(n for _, n in counts)

    (bf_changed, budgets), (few_changed, _) = changed(bf16), changed(few)
    gains = " and ".join(f"{-g:+.2f}" for g in sorted(few["regret_top1_pts"], reverse=True))
    assert bf_changed == 0 and (few["regret_top1_pts"] <= 0).all()  # what the sentence says
    return (f"({trained['candidates'].iloc[0]} candidates, {trained['bank'].nunique()} banks): bf16 channels-last "
            f"UPEM Spearman ρ ≥ {math.floor(1000 * bf16['spearman_upem'].min()) / 1000:.3f} against fp32, no pick "
            f"changed under {budgets} budgets; 128/256 images ρ {few['spearman_upem'].min():.2f}–"
            f"{few['spearman_upem'].max():.2f}, picks changed under {few_changed} of {budgets} budgets, none less "
            f"accurate (top-1 {gains} points on average)")


# python benchmarks/accuracy_estimation.py
def accuracy_estimation() -> str:
    rows = pd.read_csv(RESULTS / "accuracy_estimation.csv")
    default = rows[rows["estimator"] == "default"].set_index("bank")
    trusted = default[default["reliable_configs"] > 0]
    off = default.loc[default["reliable_configs"] == 0, "max_err_pts"]
    noseed = default.loc["m2d-noseed"]
    return (f"{len(default)} banks, {int(default['configs'].iloc[0])} sub-networks each; the verdict trusted "
            f"{int(trusted['reliable_configs'].sum())} sub-networks on {len(trusted)} banks, none of them off by more "
            f"than 5 points (m2d-noseed: {int(noseed['reliable_configs'])} of {int(noseed['configs'])}, MAE "
            f"{noseed['mae_reliable_pts']:.1f} points, interval coverage {100 * noseed['coverage_reliable']:.0f} %), "
            f"and called the other {len(off)} banks unreliable, where the estimate was up to {off.max():.0f} "
            "points off")


# python benchmarks/accuracy_estimation.py
def accuracy_estimation_labels() -> str:
    signals = pd.read_csv(RESULTS / "accuracy_estimation_signals.csv").set_index("bank")
    labels = pd.read_csv(RESULTS / "accuracy_estimation_labels.csv")
    default = labels[labels["method"] == "default"]
    n = {b: (int(signals.loc[b, "labels_for_2pts_ppi"]), int(signals.loc[b, "labels_for_2pts_alone"]))
         for b in ("m2d-noseed", "m2d-seed", "m2d-mobilenet")}
    return (f"coverage {default['coverage'].min():.3f}–{default['coverage'].max():.3f} over "
            f"{int(default['draws'].iloc[0])} draws of 25–800 labels on every bank; ±2 points needs "
            + ", ".join(f"{a} labels against {b} alone ({bank})" for bank, (a, b) in n.items()))


# python benchmarks/accuracy_estimation.py
def accuracy_estimation_ranking() -> str:
    rows = pd.read_csv(RESULTS / "accuracy_estimation_ranking.csv")
    upem = rows[rows["ranking"] == "upem"].set_index("bank")
    spread = upem[upem["acc_spread_pts"] >= 3]
    return "; ".join(f"{bank} (widths spread {r['acc_spread_pts']:.1f} points): UPEM ρ {r['spearman_rho']:.2f}, "
                     f"regret {r['regret_pts_mean']:.2f}" for bank, r in spread.iterrows())


# python benchmarks/runtime_overhead.py
def runtime_overhead() -> str:
    rows = pd.read_csv(RESULTS / "runtime_overhead_summary.csv")
    ratio = {d: g["ratio_slimda_over_minimal"] for d, g in rows.groupby("dataset")}
    decode = {d: 100 * g["minimal_decode_share"] for d, g in rows.groupby("dataset")}
    return (f"slimda's time per image is {span(ratio['digits'], 2)} the loop's on 28² digits and "
            f"{span(ratio['photos'], 2)} on 224² photos (target ≤ 1.1×). Decoding is {decode['digits'].min():.0f}–"
            f"{decode['digits'].max():.0f} % of the loop's time on digits and {decode['photos'].min():.0f}–"
            f"{decode['photos'].max():.0f} % on photos")


# python benchmarks/runtime_overhead.py
def runtime_monitor() -> str:
    rows = pd.read_csv(RESULTS / "runtime_monitor.csv")
    quiet = rows[rows["shift"] == "none"]
    switched = rows[rows["shift"] != "none"]
    big = switched[switched["window"] == 200]
    assert (big["delay_windows"] == 0).all()  # what the sentence says
    small = switched[(switched["window"] == 50) & switched["shift"].isin(["noise", "mnist"])]
    missed = int((small["detected"] != True).sum())  # noqa: E712 - a column of True/False read from CSV
    names = {"noise": "noisy", "mnist": "MNIST"}
    delays = pd.to_numeric(small["delay_windows"], errors="coerce").dropna()
    return (f"over {rows['seed'].nunique()} seeds: {int(quiet['false_alarms'].sum())} false alarms in "
            f"{int(quiet['false_alarm_windows'].sum())} windows of the target at 50 or 200 images; at 200 images "
            f"(the default) every switch alerted in its first window ({int(big['false_alarms'].sum())} false alarm "
            f"in {int(big['false_alarm_windows'].sum())} windows before the switches); at 50 images the noisy and "
            f"MNIST switches took {delays.min():.0f}–{delays.max():.0f} windows and {missed} "
            f"{' or '.join(sorted(names[s] for s in set(small.loc[small['detected'] != True, 'shift'])))} "  # noqa: E712
            f"stream{'s' if missed != 1 else ''} never alerted")


# python benchmarks/accuracy_estimation.py
def accuracy_estimation_ranking_others() -> str:
    rows = pd.read_csv(RESULTS / "accuracy_estimation_ranking.csv").set_index(["bank", "ranking"])["spearman_rho"]
    best = max(rows["m2d-mobilenet"])
    assert best < 0.9  # what the sentence says
    return (f"FLOPs alone ρ {rows['m2d-mobilenet', 'flops']:.2f}, agreement with the mean prediction of every "
            f"candidate ρ {rows['m2d-mobilenet', 'agree-all']:.2f}, of the largest quarter ρ "
            f"{rows['m2d-mobilenet', 'agree-largest-quarter']:.2f} "
            f"({rows['m2d-noseed', 'agree-largest-quarter']:.2f} on m2d-noseed)")


FIGURES: dict[str, Callable[[], str]] = {
    "latency_noise_paired": latency_noise_paired,
    "train_regression_cost": train_regression_cost,
    "train_regression": train_regression,
    "train_regression_seed_noise": train_regression_seed_noise,
    "profiler_agreement": profiler_agreement,
    "lut_accuracy": lut_accuracy,
    "lut_accuracy_int8": lut_accuracy_int8,
    "bank_vs_individual": bank_vs_individual,
    "search_regret": search_regret,
    "deploy_budget_sweep": deploy_budget_sweep,
    "deploy_budget_sweep_time": deploy_budget_sweep_time,
    "deploy_scale": deploy_scale,
    "deploy_scale_ranking": deploy_scale_ranking,
    "precision_speedup": precision_speedup,
    "openvino_int8_paths": openvino_int8_paths,
    "precision_accuracy": precision_accuracy,
    "deploy_precision_sweep": deploy_precision_sweep,
    "deploy_precision_gain": deploy_precision_gain,
    "deploy_precision_floor": deploy_precision_floor,
    "input_pipeline": input_pipeline,
    "train_throughput_ratio": train_throughput_ratio,
    "train_throughput_memory": train_throughput_memory,
    "train_throughput_shared_host": train_throughput_shared_host,
    "bank_flops": bank_flops,
    "accuracy_estimation": accuracy_estimation,
    "accuracy_estimation_labels": accuracy_estimation_labels,
    "accuracy_estimation_ranking": accuracy_estimation_ranking,
    "accuracy_estimation_ranking_others": accuracy_estimation_ranking_others,
    "runtime_overhead": runtime_overhead,
    "runtime_monitor": runtime_monitor,
}


@pytest.mark.parametrize("name", FIGURES)
def test_readme_quotes_what_the_results_hold(name):
    expected = FIGURES[name]()
    assert expected in readme(), f"README should say (from benchmarks/results): {expected!r}"
