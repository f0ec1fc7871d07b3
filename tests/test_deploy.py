"""slimda deploy / bench / quickstart on a tiny bank: export parity, manifests, artefacts, CLI errors."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomise_batchnorm
from slimda.cli import main
from slimda.data.preprocessing import Preprocessing
from slimda.deploy.deployer import Deployer, DeployOptions, ExportResult
from slimda.deploy.reports import pareto_front
from slimda.errors import ConfigError, SlimdaError
from slimda.export.manifest import MANIFEST_KEYS, missing_keys, read_manifest, sha256_file
from slimda.export.onnx_export import PARITY_TOLERANCE, onnx_opset
from slimda.latency.build import TableScaleLatency
from slimda.latency.table import load_table
from slimda.model.bank import BankMeta, ModelBank, save_bank
from slimda.profilers.measurement import Measurement, MeasureOptions
from slimda.profilers.stats import LatencyStats
from slimda.select.budget import Budgets, parse_count, parse_latency
from slimda.select.evaluate import TargetScorer, load_target_images
from slimda.select.search import SearchSettings

META = BankMeta(class_names=tuple(str(i) for i in range(10)),
                preprocessing=Preprocessing(size=(28, 28), channels=1, mean=(0.5,), std=(0.5,)), test_head="ca")
FAST_MEASURE = ["--warmup", "1", "--min-runs", "5", "--min-time", "0"]
FAST_OPTIONS = MeasureOptions(warmup=1, min_runs=5, min_time_s=0.0)
SMALL_SEARCH = SearchSettings(population=8, generations=2, mutations=4, crossovers=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """An untrained (BN-randomised) digits-cnn bank with a coarse width grid and a real ORT lookup table."""
    run = tmp_path_factory.mktemp("deploy") / "run"
    bank = ModelBank("digits-cnn", 10, 1, ratios=(0.5, 0.75, 1.0))
    randomise_batchnorm(bank, seed=3)
    save_bank(bank, run / "bank.pt", META)
    code = main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run), "--fit-configs", "3", *FAST_MEASURE])
    assert code == 0
    return run


@pytest.fixture(scope="module")
def target(run_dir):
    from slimda.model.bank import load_bank

    bank, meta = load_bank(run_dir)
    return bank, meta, load_target_images("digits", meta, calibration_images=64, score_images=96)


def deployer(run_dir, target, out, **options) -> Deployer:
    bank, meta, images = target
    scorer = TargetScorer(bank, images, "ca")
    opts = DeployOptions(measure_options=FAST_OPTIONS, settings=SMALL_SEARCH, progress=False, **options)
    return Deployer(bank, meta, run_dir, scorer, out, opts, run_dir / "bank.pt")


def mid_budget(run_dir, bank) -> float:
    table = load_table(run_dir, "cpu-onnxruntime")
    low, high = table.predict(bank.space.smallest()), table.predict(bank.space.largest())
    return low + 0.6 * (high - low)


def test_deployed_onnx_matches_the_extracted_network_and_the_manifest_is_complete(run_dir, target, tmp_path):
    bank, meta, images = target
    budget = mid_budget(run_dir, bank)
    d = deployer(run_dir, target, tmp_path / "out").deploy("cpu-onnxruntime",
                                                         Budgets(latency=parse_latency(f"{budget}ms")))
    folder = tmp_path / "out" / "cpu-onnxruntime"
    m = json.loads((folder / "manifest.json").read_text())
    assert sorted(m) == sorted(MANIFEST_KEYS) and missing_keys(m) == []  # every documented key, and no other
    assert m == d.manifest.to_dict() and read_manifest(folder) == d.manifest
    assert m["within_budget"] is (m["measured_latency_ms"] <= budget) and m["latency_tolerance"] == 0.0
    assert m["predicted_latency_ms"] <= budget and m["measured_latency_ms"] > 0 and m["measured_latency_ms_raw"] > 0
    table = load_table(run_dir, "cpu-onnxruntime")
    assert m["measurement_method"].startswith(f"paired with the table's reference {table.reference_id}")
    assert m["device_speed_vs_table"] > 0
    assert m["class_names"] == [str(i) for i in range(10)] and m["input_shape"] == [1, 1, 28, 28]
    assert m["mean"] == [0.5] and m["std"] == [0.5] and m["channels"] == 1
    assert m["versions"]["onnxruntime"] and m["versions"]["torch"]
    assert m["target"]["scored_with"] == "cpu fp32 nchw"  # where the candidates were scored
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx"]
    for name, record in m["files"].items():
        assert sha256_file(folder / name) == record["sha256"]
    # the file re-measured on the device is the file that ships
    assert m["timed_file"] == "model.onnx" and m["timed_sha256"] == m["files"]["model.onnx"]["sha256"]
    assert onnx_opset(folder / "model.onnx") == 17

    # independent parity check: the ONNX file against the PyTorch network extracted the same way
    import onnxruntime as ort

    net = deployer(run_dir, target, tmp_path / "x").scorer.calibrated(bank.space.from_id(m["config_id"])).net("ca")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in torch.cat(images.images)[:6].split(1):
        expected = net(x).detach().numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max())))
    assert worst <= PARITY_TOLERANCE and m["onnx_parity"] <= PARITY_TOLERANCE
    # BN was recalibrated on target images: the deployed net is not the bank's stored statistics
    with torch.no_grad():
        stored = bank.extract(bank.space.from_id(m["config_id"]), head="ca").eval()
        assert not torch.allclose(stored(torch.cat(images.images)[:4]), net(torch.cat(images.images)[:4]))

    with (tmp_path / "out" / "deploy_report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["config_id"] == m["config_id"]
    assert rows[0]["within_budget"] == str(m["within_budget"])

    # a manifest written before latency_tolerance existed reads with none; one missing a key names it
    older = tmp_path / "older.json"
    older.write_text(json.dumps({k: v for k, v in m.items() if k != "latency_tolerance"}))
    assert read_manifest(older).latency.tolerance == 0.0
    older.write_text(json.dumps({k: v for k, v in m.items() if k != "files"}))
    with pytest.raises(SlimdaError, match="lacks files"):
        read_manifest(older)


def test_select_by_ranks_by_the_ensemble_or_the_estimate_and_the_manifest_says_which(run_dir, target, tmp_path):
    bank, meta, images = target
    largest = bank.space.largest()
    ensemble = TargetScorer(bank, images, "ca", select_by="upem-ensemble")
    assert ensemble.score(largest).upem > 0  # the anchor is the uniform widths' mean, not the largest itself
    assert TargetScorer(bank, images, "ca").score(largest).upem == 0
    with pytest.raises(ConfigError, match="--select-by estimate needs an estimate"):
        TargetScorer(bank, images, "ca", select_by="estimate")  # no source split
    with pytest.raises(ConfigError, match="unknown --select-by"):
        TargetScorer(bank, images, "ca", select_by="vibes")
    source = load_target_images("mnist", meta, calibration_images=1, score_images=100)
    scorer = TargetScorer(bank, load_target_images("digits", meta, calibration_images=64, score_images=128), "ca",
                          source=source, select_by="estimate")
    config = bank.space.smallest()
    assert scorer.fitness(config) == -scorer.estimate(config).estimate
    opts = DeployOptions(measure_options=FAST_OPTIONS, settings=SMALL_SEARCH, progress=False, measure=False)
    d = Deployer(bank, meta, run_dir, scorer, tmp_path / "out", opts).deploy(
        "cpu-onnxruntime", Budgets(latency=parse_latency(f"{mid_budget(run_dir, bank)}ms")))
    m = d.manifest.to_dict()
    assert m["selected_by"] == "estimate" and m["estimated_target_accuracy"]["value"] == pytest.approx(
        -min(scorer.fitness(bank.space.from_id(i)) for i in d.search.evaluated), abs=1e-5)


def test_openvino_ir_and_ort_format_artefacts_run_and_agree(run_dir, target, tmp_path):
    import onnxruntime as ort
    import openvino as ov

    dep = deployer(run_dir, target, tmp_path / "fleet")
    budgets = Budgets(flops=parse_count("5M", "flops"), params=parse_count("150k", "params"))
    results = [dep.deploy(name, budgets) for name in ("cpu-openvino", "ort-mobile")]
    assert results[0].manifest.network.config_id == results[1].manifest.network.config_id  # same budgets, UPEM
    for d in results:
        assert d.manifest.network.flops_m <= 5 and d.manifest.network.params_m <= 0.15
        assert d.manifest.latency.predicted_ms is None  # no table for these devices: nothing predicted
        assert d.manifest.latency.within_budget is None  # no latency budget: no verdict
    x = torch.cat(target[2].images)[:1].numpy()
    reference = ort.InferenceSession(str(tmp_path / "fleet" / "cpu-openvino" / "model.onnx"),
                                     providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    compiled = ov.Core().compile_model(str(tmp_path / "fleet" / "cpu-openvino" / "model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(x)[0], reference, rtol=1e-4, atol=1e-4)
    ort_file = tmp_path / "fleet" / "ort-mobile" / "model.ort"
    assert results[1].manifest.artefact.notes["ort_target_platform"] == "arm"
    assert results[1].manifest.to_dict()["artifact"] == {"kind": "ort", "file": "model.ort",
                                                         "ort_target_platform": "arm"}
    got = ort.InferenceSession(str(ort_file), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
    with (tmp_path / "fleet" / "deploy_report.csv").open() as fh:
        assert [r["device"] for r in csv.DictReader(fh)] == ["cpu-openvino", "ort-mobile"]

    # what was timed is what ships: the IR itself; the .ort converted for this host's platform. An arm .ort
    # does not run at speed on an x86 host, so the desktop proxy times the same ONNX converted for it, and
    # the manifest's hashes and note say so rather than claim the shipped file was timed
    ir = results[0].manifest.to_dict()
    assert ir["timed_file"] == "model.xml" and ir["timed_sha256"] == ir["files"]["model.xml"]["sha256"]
    arm = results[1].manifest.to_dict()
    assert arm["timed_sha256"] != arm["files"]["model.ort"]["sha256"]
    assert "the shipped model.ort is converted for arm" in arm["measurement"]["notes"]
    from slimda.profilers.backends.ort_mobile import host_platform

    native = deployer(run_dir, target, tmp_path / "native", ort_platform=host_platform()).deploy("ort-mobile", budgets)
    here = native.manifest.to_dict()
    assert here["timed_file"] == "model.ort" and here["timed_sha256"] == here["files"]["model.ort"]["sha256"]
    assert "timed the shipped model.ort" in here["measurement"]["notes"]


def fake_device(latency_ms) -> object:
    """A ``DeployOptions.measure_with`` that reports ``latency_ms(export)`` instead of timing anything."""
    def measure(exported: ExportResult, device, opts, table) -> TableScaleLatency:
        ms = latency_ms(exported)
        raw = Measurement("cpu-onnxruntime", "onnxruntime", "fake", "fp32", 1, 1, "1x1x28x28", "test",
                          LatencyStats(p50=ms, p90=ms, mean=ms, runs=5))
        return TableScaleLatency(ms, raw, "fake", None)
    return measure


def test_measured_over_budget_searches_again_under_a_tighter_limit(run_dir, target, tmp_path):
    bank = target[0]
    budget = mid_budget(run_dir, bank)
    table = load_table(run_dir, "cpu-onnxruntime")
    exported = []

    def slow_first(export: ExportResult) -> float:  # the first pick runs 25 % over budget, later ones as predicted
        exported.append(export.config)
        return budget * 1.25 if len(exported) == 1 else table.predict(export.config)

    d = deployer(run_dir, target, tmp_path / "retry", retries=3, measure_with=fake_device(slow_first)).deploy(
        "cpu-onnxruntime", Budgets(latency=parse_latency(f"{budget}ms")))
    attempts = d.manifest.provenance.attempts
    assert len(attempts) == 2 and [a.config_id for a in attempts] == [c.id for c in exported]
    assert attempts[0].measured_latency_ms > budget
    # the second search asked for the first pick's prediction scaled by how far off it was (× 0.98), but
    # never for less than the smallest sub-network
    scaled = attempts[0].predicted_latency_ms * budget / attempts[0].measured_latency_ms * 0.98
    smallest = table.predict(bank.space.smallest())
    assert attempts[1].latency_limit_ms == pytest.approx(max(scaled, smallest), rel=1e-4)
    assert attempts[1].config_id != attempts[0].config_id
    assert d.manifest.latency.within_budget is True and d.manifest.network.config_id == attempts[1].config_id


def test_a_device_that_stays_over_budget_gets_a_warning(run_dir, target, tmp_path, capsys):
    budget = mid_budget(run_dir, target[0])
    slow = fake_device(lambda export: budget * 1.25)  # every pick runs 25 % over budget
    d = deployer(run_dir, target, tmp_path / "slow", retries=1, measure_with=slow).deploy(
        "cpu-onnxruntime", Budgets(latency=parse_latency(f"{budget}ms")))
    assert len(d.manifest.provenance.attempts) == 2 and d.manifest.latency.within_budget is False
    err = capsys.readouterr().err
    assert "warning: cpu-onnxruntime" in err and "after 2 attempt(s)" in err and "--retries" in err


def test_within_the_tolerance_counts_as_within_budget_everywhere(run_dir, target, tmp_path, capsys):
    budget = mid_budget(run_dir, target[0])
    near = fake_device(lambda export: budget * 1.03)  # 3 % over: inside a 5 % tolerance
    d = deployer(run_dir, target, tmp_path / "near", tolerance=0.05, measure_with=near).deploy(
        "cpu-onnxruntime", Budgets(latency=parse_latency(f"{budget}ms")))
    assert len(d.manifest.provenance.attempts) == 1  # not searched again
    assert d.manifest.latency.within_budget is True and d.manifest.latency.tolerance == 0.05
    written = json.loads((tmp_path / "near" / "cpu-onnxruntime" / "manifest.json").read_text())
    assert written["within_budget"] is True and written["latency_tolerance"] == 0.05
    with (tmp_path / "near" / "deploy_report.csv").open() as fh:
        assert [r["within_budget"] for r in csv.DictReader(fh)] == ["True"]
    assert "warning" not in capsys.readouterr().err


def test_budgets_need_one_limit():
    with pytest.raises(ConfigError, match="at least one budget"):
        Budgets()


def test_pareto_front():
    points = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 6), (5, 1)]
    assert pareto_front(points) == [True, True, False, True, False, False]


# ------------------------------------------------------------------------------------- CLI, as a user runs it

def slimda(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "slimda.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)


def test_deploy_and_bench_commands_end_to_end(run_dir, tmp_path):
    bank = target_bank(run_dir)
    budget = f"{mid_budget(run_dir, bank):.4f} ms"
    out = tmp_path / "fleet"
    done = slimda("deploy", "--bank", str(run_dir), "--target", "digits", "--latency", budget, "--device",
                  "cpu-onnxruntime,cpu-openvino", "--out", str(out), "--calibration-images", "64",
                  "--score-images", "96", "--population", "8", "--generations", "2", *FAST_MEASURE)
    # cpu-openvino has no table: the fleet stops there with how to build it, after deploying cpu-onnxruntime
    assert done.returncode == 2, done.stderr
    assert "no latency table for device cpu-openvino" in done.stderr
    assert f"slimda-profile --device cpu-openvino --bank {run_dir}" in done.stderr
    assert (out / "cpu-onnxruntime" / "manifest.json").is_file()
    # the bank has no source split: deployed without an estimate, saying why
    assert "no estimate of target accuracy" in done.stderr and "--source-val" in done.stderr
    assert json.loads((out / "cpu-onnxruntime" / "manifest.json").read_text())["estimated_target_accuracy"] is None
    with_split = ["--source-val", "mnist", "--source-val-images", "100"]  # labelled source images to calibrate on
    done = slimda("deploy", "--bank", str(run_dir), "--target", "digits", "--latency", budget, "--out", str(out),
                  "--calibration-images", "64", "--score-images", "128", "--population", "8", "--generations", "2",
                  "--label-budget", "20", *with_split, *FAST_MEASURE)
    assert done.returncode == 0, done.stderr
    check_label_request(out / "cpu-onnxruntime")
    assert "cpu-onnxruntime" in done.stdout and "measured_ms" in done.stdout and "est_acc" in done.stdout
    manifest = json.loads((out / "cpu-onnxruntime" / "manifest.json").read_text())
    estimate = manifest["estimated_target_accuracy"]
    assert estimate["verdict"] in ("reliable", "unreliable") and 0 <= estimate["low"] <= estimate["high"] <= 1
    assert estimate["target_images"] == 128 and estimate["source_images"] == 100 and estimate["temperature"] > 0
    assert estimate["estimator"] and estimate["why"] is not None and isinstance(estimate["threshold"], float)
    assert estimate["score"] in ("max-confidence", "neg-entropy")  # what the threshold is on
    summary = estimate["target_summary"]
    assert len(summary["class_frequencies"]) == 10 and sum(summary["class_frequencies"]) == pytest.approx(1, abs=1e-3)
    bench = slimda("bench", "--bank", str(run_dir), "--target", "digits", "--deployments", str(out), "--configs",
                   "8", "--calibration-images", "64", "--score-images", "128", "--out", str(tmp_path / "bench"),
                   *with_split)
    assert bench.returncode == 0, bench.stderr
    with (tmp_path / "bench" / "cpu-onnxruntime.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    deployed = manifest["config_id"]
    assert any(r["config_id"] == deployed and r["kind"] == "deployed" for r in rows)
    assert any(r["pareto_upem"] == "True" for r in rows) and all(r["target_acc"] for r in rows)
    for r in rows:
        assert 0 <= float(r["est_acc_low"]) <= float(r["est_acc_high"]) <= 1 and r["est_verdict"]
    assert (tmp_path / "bench" / "cpu-onnxruntime.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_label_request(deployment: Path) -> None:
    """The picked images are there to label; missing and unknown labels are refused; filled in, they give an
    interval that the manifest records."""
    import re

    from slimda.data.domains import load_domain

    labels = deployment / "labels"
    request = json.loads((labels / "request.json").read_text())
    assert len(request["images"]) == 20 and all((labels / "images" / n).is_file() for n in request["images"])
    refused = slimda("label-estimate", str(deployment))
    assert refused.returncode == 2 and "20 of the 20 images" in refused.stderr and "no label" in refused.stderr
    truth = load_domain("digits").labels()
    rows = [{"image": n, "label": str(truth[int(re.search(r"\[(\d+)\]", o).group(1))])}
            for n, o in zip(request["images"], request["originals"])]
    write = lambda rows: (labels / "labels.csv").write_text(  # noqa: E731
        "image,label\n" + "".join(f"{r['image']},{r['label']}\n" for r in rows))
    write([{**rows[0], "label": "eleven"}, *rows[1:]])
    refused = slimda("label-estimate", str(deployment))
    assert refused.returncode == 2 and "not classes of the model: ['eleven']" in refused.stderr
    write(rows)
    done = slimda("label-estimate", str(deployment))
    assert done.returncode == 0, done.stderr
    result = json.loads((deployment / "manifest.json").read_text())["labelled_target_accuracy"]
    assert result["labels"] == 20 and result["method"] == "prediction-powered" and result["unlabelled"] == 128
    assert result["low"] <= result["labelled_accuracy"] <= result["high"] and "accuracy on the target" in done.stdout


def target_bank(run_dir):
    from slimda.model.bank import load_bank

    return load_bank(run_dir)[0]


def test_deploy_errors_are_clear(run_dir, tmp_path):
    common = ["--target", "digits", "--calibration-images", "32", "--score-images", "32", *FAST_MEASURE]
    cases = [
        (["--bank", str(run_dir), "--latency", "0.000001ms", *common],
         ["no sub-network of the bank meets the budget", "smallest sub-network", " ms"]),
        (["--bank", str(run_dir), "--latency", "fast", *common], ["cannot read latency budget 'fast'"]),
        (["--bank", str(run_dir), *common], ["give at least one budget"]),
        (["--bank", str(run_dir), "--latency", "1ms", "--device", "cpu-tpu", *common], ["unknown device"]),
        (["--bank", str(run_dir), "--latency", "1ms", "--target", str(tmp_path / "missing"),
          "--calibration-images", "32"], ["missing"]),
        (["--bank", str(tmp_path / "nobank"), "--latency", "1ms", *common], ["no model bank at"]),
        (["--bank", str(run_dir), "--latency", "1ms", "--tolerance", "5", *common], ["--tolerance is a share"]),
        (["--bank", str(run_dir), "--latency", "1ms", "--out", str(run_dir / "bank.pt"), *common],
         ["bank.pt is a file, not a folder"]),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((["--bank", str(run_dir), "--latency", "1ms", "--target", str(empty)], [str(empty)]))
    evil = tmp_path / "evil" / "bank.pt"
    evil.parent.mkdir()
    marker = tmp_path / "pwned"
    evil.write_bytes(pickle.dumps(Exploit(str(marker))))
    cases.append((["--bank", str(evil.parent), "--latency", "1ms", *common], ["is not a slimda model bank"]))
    for argv, expected in cases:
        done = slimda("deploy", *argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        for text in expected:
            assert text in done.stderr, (argv, done.stderr)
    assert not marker.exists()  # the pickled object in the fake bank never ran


class Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_quickstart_runs_end_to_end_and_reuses_finished_stages(tmp_path, capsys):
    argv = ["quickstart", "--out", str(tmp_path / "qs"), "--iters", "3", "--fit-configs", "2", "--device",
            "cpu-onnxruntime", "--min-time", "0.005", "--bench-configs", "3"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "cpu-onnxruntime" in out.out and "within_budget" in out.out
    with (tmp_path / "qs" / "summary.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["predicted_ms"]) <= float(row["budget_ms"])
    for name in ("run/bank.pt", "run/eval.csv", "run/latency/cpu-onnxruntime.csv", "deploy/deploy_report.csv",
                 "deploy/cpu-onnxruntime/manifest.json", "bench/cpu-onnxruntime.png"):
        assert (tmp_path / "qs" / name).is_file(), name
    assert main(argv) == 0  # a second run reuses the bank and the table
    err = capsys.readouterr().err
    assert "reusing the finished run" in err and "0 entries timed" in err


def test_batch_and_dynamic_batch_exports(run_dir, target, tmp_path):
    import numpy as np
    import onnxruntime as ort
    import openvino as ov

    from slimda.profilers.devices import get_device

    bank = target[0]
    budget = Budgets(latency=parse_latency(f"{mid_budget(run_dir, bank):.5f}ms"))
    # a symbolic batch: any batch runs, the latency is timed at the table's batch (1)
    d = deployer(run_dir, target, tmp_path / "dyn", dynamic_batch=True).deploy("cpu-onnxruntime", budget)
    raw = json.loads((d.dir / "manifest.json").read_text())
    assert raw["input_shape"] == ["batch", 1, 28, 28] and raw["dynamic_batch"] and raw["latency_batch"] == 1
    assert read_manifest(d.dir).input.input_shape == (1, 1, 28, 28) and raw["measured_latency_ms"] > 0
    session = ort.InferenceSession(str(d.dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    batched = session.run(None, {"input": x})[0]
    one = np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(5)])
    assert batched.shape == (5, 10) and np.allclose(batched, one, atol=1e-5)
    flops = Budgets(flops=parse_count("100M", "flops"))
    d = deployer(run_dir, target, tmp_path / "ov", dynamic_batch=True).deploy("cpu-openvino", flops)
    compiled = ov.Core().compile_model(str(d.dir / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled(x[:3])[0].shape == (3, 10)
    from slimda.deploy.precision import Int8Settings  # an int8 model keeps the symbolic batch

    d = deployer(run_dir, target, tmp_path / "q", dynamic_batch=True, precision="int8",
                 int8=Int8Settings(images=16, agreement=0.0, finalists=1)).deploy("cpu-onnxruntime", flops)
    session = ort.InferenceSession(str(d.dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert d.manifest.precision.precision == "int8" and session.run(None, {"input": x[:3]})[0].shape == (3, 10)
    # a fixed batch: the input is [N, ...]; a latency budget needs a table timed at that batch
    d = deployer(run_dir, target, tmp_path / "b4", batch=4).deploy("cpu-onnxruntime", flops)
    assert json.loads((d.dir / "manifest.json").read_text())["input_shape"] == [4, 1, 28, 28]
    session = ort.InferenceSession(str(d.dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": x[:4]})[0].shape == (4, 10)
    with pytest.raises(SlimdaError, match="--batch 4, but its latency table was timed at batch 1.*--batch 4`"):
        deployer(run_dir, target, tmp_path / "b4t", batch=4).deploy("cpu-onnxruntime", budget)
    with pytest.raises(ConfigError, match="tensorrt runs TensorRT engines built for one input shape"):
        deployer(run_dir, target, tmp_path / "trt", dynamic_batch=True)._batch(get_device("tensorrt"), {}, budget)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("batch", ["1", "4", "dynamic"])
def test_every_batch_and_precision_deploys_and_runs_at_its_batch(run_dir, target, tmp_path, precision, batch):
    """int8 calibration feeds the exported batch (a fixed batch of 4 takes nothing else), and the shipped,
    re-measured model runs at it."""
    import onnxruntime as ort

    from slimda.deploy.precision import Int8Settings

    shape = dict(dynamic_batch=True) if batch == "dynamic" else dict(batch=int(batch))
    d = deployer(run_dir, target, tmp_path / "out", precision=precision, **shape,
                 int8=Int8Settings(images=9, agreement=0.0, finalists=1)).deploy(
        "cpu-onnxruntime", Budgets(flops=parse_count("100M", "flops")))
    m = json.loads((d.dir / "manifest.json").read_text())
    n = 3 if batch == "dynamic" else int(batch)
    assert m["input_shape"][0] == ("batch" if batch == "dynamic" else n) and m["precision"] == precision
    assert m["measured_latency_ms"] > 0 and m["timed_sha256"] == m["files"]["model.onnx"]["sha256"]
    if precision == "int8":  # every calibration image fed once, whatever the batch groups them into
        assert m["quantization"]["calibration_images"] == 9 and len(set(m["quantization"]["calibration_indices"])) == 9
    session = ort.InferenceSession(str(d.dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.cat(target[2].images)[:n].numpy()
    assert session.run(None, {"input": x})[0].shape == (n, 10)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("batch", ["1", "4"])
def test_every_batch_and_precision_builds_a_table(run_dir, tmp_path, precision, batch):
    out = tmp_path / f"table-{precision}-{batch}.csv"
    assert main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run_dir), "--precision", precision,
                 "--batch", batch, "--fit-configs", "2", "--rounds", "1", "--out", str(out), *FAST_MEASURE]) == 0
    from slimda.latency.table import LatencyTable

    table = LatencyTable.load(out)
    assert table.plan.input_shape[0] == int(batch) and table.precision == precision
    assert table.predict(target_bank(run_dir).space.largest()) > 0


def test_re_measurements_export_the_tables_reference_once(run_dir, target, tmp_path, monkeypatch):
    from slimda.latency import build

    bank = target[0]
    table = load_table(run_dir, "cpu-onnxruntime")
    made = []
    real = build.Exporter

    def counting(*args, **kwargs):
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "Exporter", counting)
    monkeypatch.setattr(build, "_REFERENCES", build.weakref.WeakKeyDictionary())  # earlier tests' exports
    onnx = tmp_path / "model.onnx"
    from slimda.export.onnx_export import export_onnx

    export_onnx(bank.extract(bank.space.smallest(), head="ca").eval(), onnx, (1, 1, 28, 28), 17)
    first = build.measure_like_table(onnx, table, bank, "cpu-onnxruntime", FAST_OPTIONS)
    second = build.measure_like_table(onnx, table, bank, "cpu-onnxruntime", FAST_OPTIONS)
    assert len(made) == 1 and first.latency_ms > 0 and second.latency_ms > 0
    assert first.method.startswith(f"paired with the table's reference {table.reference_id}")
