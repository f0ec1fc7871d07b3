"""INT8: static QDQ quantization with ONNX Runtime's tools, calibrated on target images through the manifest's
preprocessing, run by ONNX Runtime and OpenVINO."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from slimda.data.domains import load_domain
from slimda.data.preprocessing import Preprocessing
from slimda.errors import ConfigError, SlimdaError
from slimda.export.manifest import InputRecipe
from slimda.export.onnx_export import export_onnx
from slimda.export.quantize import TargetCalibrationReader, quantize_qdq, split_calibration, top1_agreement
from slimda.profilers.devices import DEVICES
from slimda.profilers.measurement import MeasureOptions, measure_row
from slimda.profilers.onnxinfo import activation_format, is_quantized, model_precision
from slimda.select.evaluate import calibrated
from slimda.train.config import TrainConfig
from slimda.train.trainer import Trainer


def _meta():
    from slimda.model.bank import BankMeta

    return BankMeta(tuple(str(i) for i in range(10)), Preprocessing((28, 28), 1, (0.5,), (0.5,)))


META = _meta()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits-cnn bank trained briefly on mnist -> digits (confident enough that top-1 is meaningful)."""
    run = tmp_path_factory.mktemp("q") / "run"
    trainer = Trainer(TrainConfig(iters=100, batch_size=32, model_batch=2, checkpoint_every=100), run,
                      progress=False)
    trainer.fit()
    return trainer


def test_int8_subnetwork_is_calibrated_through_the_manifest_recipe_and_agrees_with_fp32(trained, tmp_path):
    bank, meta = trained.bank.eval(), trained.meta()
    config = bank.space.uniform(0.75)
    target = load_domain("digits")
    # the deployed recipe, read back from its manifest form: what calibration must feed
    recipe = InputRecipe.from_dict(InputRecipe((1, *meta.input_chw), meta.preprocessing, meta.class_names).to_dict())
    dataset = target.dataset(recipe.preprocessing)
    scored = list(range(0, 600))
    cal = split_calibration(len(target), 64, scored, seed=0)
    assert len(cal) == 64 and not set(cal) & set(scored)
    calibration = [dataset[i][0][None] for i in cal[:32]]
    net = calibrated(bank, config, calibration).net("ca")
    fp32 = export_onnx(net, tmp_path / "model.onnx", (1, *meta.input_chw))
    reader = TargetCalibrationReader(dataset, cal, recipe.input_name)
    record = quantize_qdq(fp32, tmp_path / "model.int8.onnx", reader, method="minmax")
    int8 = tmp_path / "model.int8.onnx"
    assert is_quantized(int8) and model_precision(int8) == "int8" and not is_quantized(fp32)
    # what the reader fed: exactly the calibration images, preprocessed by the manifest's recipe
    expected = [hashlib.sha256(dataset[i][0][None].numpy().tobytes()).hexdigest() for i in cal]
    assert record.image_indices == tuple(cal) and list(record.image_sha256) == expected
    assert record.images == 64 and record.per_channel and record.to_dict()["calibration_method"] == "minmax"

    images = np.stack([dataset[i][0].numpy() for i in scored[:300]])
    import onnxruntime as ort

    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    predicted = {int(session.run(None, {"input": x[None]})[0].argmax()) for x in images}
    assert len(predicted) >= 5  # a network that tells digits apart, so agreement means something
    assert top1_agreement(fp32, int8, images) >= 0.9  # ONNX Runtime
    import openvino as ov

    ov_int8 = ov.Core().compile_model(str(int8), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ov_fp32 = ov.Core().compile_model(str(fp32), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    same = [int(ov_int8(x[None])[0].argmax() == ov_fp32(x[None])[0].argmax()) for x in images]
    assert np.mean(same) >= 0.9  # OpenVINO runs the same QDQ model
    from slimda.export.artifacts import build_artifact

    (tmp_path / "ir").mkdir()
    ir = build_artifact(int8, DEVICES["cpu-openvino"], tmp_path / "ir", MeasureOptions(precision="int8"))
    assert ir.notes["weights"].startswith("int8") and ir.path.name == "model.xml"
    ir_int8 = ov.Core().compile_model(str(ir.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.mean([int(ir_int8(x[None])[0].argmax() == ov_int8(x[None])[0].argmax()) for x in images]) >= 0.99
    fast = MeasureOptions(precision="int8", warmup=1, min_runs=5, min_time_s=0.0)
    for device in ("cpu-onnxruntime", "cpu-openvino", "ort-mobile"):
        row = measure_row(int8, device, fast)
        assert row["status"] == "ok" and row["precision"] == "int8", (device, row.get("error"))

    # the CPU runtimes' format: uint8 activations (ONNX Runtime's fast x86 kernels), TensorRT's: int8 symmetric
    uint8 = tmp_path / "model.uint8.onnx"
    quantize_qdq(fp32, uint8, TargetCalibrationReader(dataset, cal), activations="uint8")
    assert activation_format(int8) == "int8" and activation_format(uint8) == "uint8"
    assert top1_agreement(fp32, uint8, images) >= 0.9
    assert measure_row(uint8, "cpu-onnxruntime", fast)["precision"] == "int8"
    assert {d: DEVICES[d].int8_activations for d in ("cpu-onnxruntime", "cpu-openvino", "jetson-agx-orin",
                                                      "tensorrt")} == {"cpu-onnxruntime": "uint8", "cpu-openvino":
                                                                        "uint8", "jetson-agx-orin": "int8",
                                                                        "tensorrt": "int8"}


def test_calibration_refuses_too_few_free_images_and_unknown_methods(tmp_path):
    with pytest.raises(ConfigError, match="needs 64 target images that are not used for scoring.*has 100"):
        split_calibration(100, 64, range(50))
    reader = TargetCalibrationReader([(np.zeros((1, 4, 4), np.float32), 0)], [0])
    with pytest.raises(ConfigError, match="unknown calibration method 'magic'"):
        quantize_qdq(tmp_path / "none.onnx", tmp_path / "out.onnx", reader, method="magic")
    assert not (tmp_path / "out.onnx").exists()


def test_an_int8_table_is_built_from_quantized_entries_and_serves_int8_only(tmp_path, capsys):
    from slimda.cli import main
    from slimda.latency.table import load_table, table_path
    from slimda.model.bank import ModelBank, save_bank

    run = tmp_path / "run"
    save_bank(ModelBank("digits-cnn", 10, 1, ratios=(0.5, 1.0)), run / "bank.pt", META)
    fast = ["--warmup", "1", "--min-runs", "5", "--min-time", "0", "--fit-configs", "3", "--rounds", "1"]
    assert main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run), "--precision", "int8", *fast,
                 "--validate", "2"]) == 0
    path = table_path(run, "cpu-onnxruntime", "int8")
    assert path.name == "cpu-onnxruntime-int8.csv" and path.is_file()
    table = load_table(run, "cpu-onnxruntime", "int8")
    timed = [r for r in table.rows if r["entry_kind"] != "correction" and r["status"] == "ok"]
    assert timed and {r["precision"] for r in timed} == {"int8"}  # blocks and networks, all quantized
    assert {r["entry_kind"] for r in timed} >= {"block", "whole"} and table.precision == "int8"
    assert {r["table_precision"] for r in table.rows} == {"int8"}  # stored on every row, the correction's too
    # a table from before the column says its precision by what its rows ran in
    from slimda.latency.table import LatencyTable, table_precision

    old = [{**r, "table_precision": ""} for r in table.rows]
    assert table_precision(old) == "int8" and LatencyTable(old).precision == "int8"
    assert table_precision([{**r, "table_precision": "", "precision": "fp32"} for r in table.rows]) == "fp32"
    with pytest.raises(SlimdaError, match="mixes rows built in fp32, int8"):
        table_precision([*table.rows, {**table.rows[0], "table_precision": "fp32"}])
    path.rename(table_path(run, "cpu-onnxruntime"))  # an int8 table where the fp32 one belongs is refused
    with pytest.raises(SlimdaError, match="was timed in int8, not fp32"):
        load_table(run, "cpu-onnxruntime", "fp32")
    table_path(run, "cpu-onnxruntime").rename(path)
    with pytest.raises(SlimdaError, match="no latency table for device cpu-onnxruntime at"):
        load_table(run, "cpu-onnxruntime")  # the fp32 table is another file, not this one
    capsys.readouterr()
    assert main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run), "--out", str(path), *fast]) == 2
    assert "was built in int8, and this build asks for fp32" in capsys.readouterr().err


def test_deploy_searches_width_x_precision_and_records_how_int8_was_made(trained, tmp_path, capsys,
                                                                        monkeypatch):
    """--precision auto searches fp32 and int8 under their own tables; int8 finalists are quantized on target
    images that never score, scored as quantized, and the manifest says how; --precision int8 deploys the QDQ
    model that was scored, with its fp32 network beside it."""
    import json

    from slimda.cli import main
    from slimda.export.manifest import MANIFEST_KEYS, read_manifest, sha256_file
    from slimda.latency.table import load_table

    run = trained.run_dir
    fast = ["--warmup", "1", "--min-runs", "5", "--min-time", "0"]
    for precision in ("fp32", "int8"):
        assert main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run), "--precision", precision, *fast,
                     "--fit-configs", "3", "--rounds", "1"]) == 0
    tables = {p: load_table(run, "cpu-onnxruntime", p) for p in ("fp32", "int8")}
    space = trained.bank.space
    budget = 1.5 * max(t.predict(space.largest()) for t in tables.values())  # every width fits in both
    common = ["--bank", str(run), "--target", "digits", "--latency", f"{budget:.4f}ms", "--calibration-images", "64",
              "--score-images", "300", "--population", "6", "--generations", "1", "--int8-images", "32",
              "--finalists", "2", "--retries", "0", *fast]  # a loaded host must not change the choice
    capsys.readouterr()
    assert main(["deploy", *common, "--precision", "auto", "--out", str(tmp_path / "auto")]) == 0
    manifest = json.loads((tmp_path / "auto" / "cpu-onnxruntime" / "manifest.json").read_text())
    assert [k for k in MANIFEST_KEYS if k not in manifest] == []
    finalists = manifest["precision_candidates"]
    assert {c["precision"] for c in finalists} == {"fp32", "int8"} and len(finalists) == 3  # 1 fp32 + 2 int8
    assert sum(c["verdict"] == "deployed" for c in finalists) == 1
    for c in finalists:
        if c["precision"] == "int8":  # scored as quantized, and compared with its own fp32 network
            assert 0 <= c["agreement"] <= 1 and c["upem"] != c["upem_fp32"]
    # nothing is wider than the full network, and fp32 at full width has UPEM 0: int8 cannot beat it here
    assert manifest["precision"] == "fp32" and manifest["upem"] == 0 and manifest["quantization"] is None

    # with a source split: the int8 model's own estimate, and images to label picked from its predictions
    assert main(["deploy", *common, "--precision", "int8", "--out", str(tmp_path / "int8"), "--source-val", "mnist",
                 "--source-val-images", "150", "--label-budget", "10"]) == 0
    folder = tmp_path / "int8" / "cpu-onnxruntime"
    m = read_manifest(folder)
    raw = json.loads((folder / "manifest.json").read_text())
    (deployed,) = [c for c in raw["precision_candidates"] if c["verdict"] == "deployed"]
    assert raw["estimated_target_accuracy"]["value"] == deployed["est_acc"] is not None
    assert raw["estimated_target_accuracy"]["source_images"] == 150
    assert len(json.loads((folder / "labels" / "request.json").read_text())["picked"]) == 10
    q = raw["quantization"]
    assert m.precision.precision == "int8" and raw["measurement"]["precision"] == "int8"
    assert is_quantized(folder / "model.onnx") and not is_quantized(folder / "model.fp32.onnx")
    assert set(raw["files"]) >= {"model.onnx", "model.fp32.onnx"}
    assert raw["files"]["model.onnx"]["sha256"] == sha256_file(folder / "model.onnx")
    assert q["calibration_method"] == "percentile" and q["calibration_images"] == 32
    assert len(q["calibration_sha256"]) == 32
    assert q["activations"] == "uint8" and q["agreement"] >= q["agreement_threshold"] == 0.9
    assert q["agreement_images"] == 300 and raw["upem"] >= 0 and raw["upem_fp32"] is not None
    # calibration images are never scored ones (the scorer draws its 300 with the same seed)
    from slimda.select.evaluate import load_target_images

    scored = load_target_images("digits", trained.meta(), 64, 300).scored
    assert not set(q["calibration_indices"]) & set(scored)
    assert "int8" in capsys.readouterr().out  # the summary table names the precision

    # slimda bench: one series per precision, int8 scored as quantized, the deployed int8 network marked
    import csv

    assert main(["bench", "--bank", str(run), "--target", "digits", "--deployments", str(tmp_path / "int8"),
                 "--configs", "3", "--calibration-images", "64", "--score-images", "300", "--int8-images", "32",
                 "--out", str(tmp_path / "bench")]) == 0
    with (tmp_path / "bench" / "cpu-onnxruntime.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    by = {(r["config_id"], r["precision"]): r for r in rows}
    assert {r["precision"] for r in rows} == {"fp32", "int8"} and len(by) == len(rows)
    deployed = by[(m.network.config_id, "int8")]
    assert float(deployed["upem"]) == pytest.approx(raw["upem"], abs=1e-6)  # scored as deploy scored it
    assert by[(m.network.config_id, "fp32")]["upem"] != deployed["upem"]  # fp32 and quantized scores differ
    assert any(r["pareto_upem"] == "True" and r["precision"] == "int8" for r in rows)
    assert (tmp_path / "bench" / "cpu-onnxruntime.png").stat().st_size > 0
    capsys.readouterr()

    # int8 on a device without fast int8, and a threshold nothing reaches, are refused with the reason
    assert main(["deploy", *common, "--precision", "int8", "--device", "jetson-nano"]) == 2
    assert "jetson-nano does not run int8 (its Maxwell GPU has no fast INT8 kernels); it supports fp32, fp16" \
        in capsys.readouterr().err
    scoring_all = [a if a != "300" else "0" for a in common]  # every target image scores: none left to calibrate
    assert main(["deploy", *scoring_all, "--precision", "int8", "--out", str(tmp_path / "none")]) == 2
    assert "int8 calibration needs 32 target images that are not used for scoring, but the target has 1797 images " \
        "and 1797 score sub-networks" in capsys.readouterr().err
    from dataclasses import replace

    from slimda.deploy.precision import QuantizedScorer

    scored = QuantizedScorer.candidate  # every int8 finalist quantized badly: nothing is deployed, and it says why
    monkeypatch.setattr(QuantizedScorer, "candidate", lambda *a: replace(scored(*a), agreement=0.5))
    assert main(["deploy", *common, "--precision", "int8", "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "nothing was deployed: every int8 finalist agrees with its fp32 network on fewer than 90%" in err
    assert "Traceback" not in err and not (tmp_path / "refused" / "cpu-onnxruntime").exists()


def test_the_choice_refuses_int8_models_below_the_agreement_threshold():
    from slimda.deploy.precision import Candidate, choose
    from slimda.model.space import WidthSpace

    space = WidthSpace.from_dict(__import__("slimda.model.bank", fromlist=["ModelBank"]).ModelBank(
        "digits-cnn", 10, 1, ratios=(0.5, 1.0)).space.to_dict())
    wide, narrow = space.largest(), space.smallest()
    bad = Candidate(wide, "int8", 1.0, 0.0, 0.01, agreement=0.5)
    good = Candidate(narrow, "int8", 1.0, 0.05, 0.06, agreement=0.95)
    fp32 = Candidate(narrow, "fp32", 2.0, 0.05, 0.05)
    assert choose([bad, good, fp32], 0.9) is fp32  # the least UPEM among those allowed
    assert bad.verdict.startswith("not deployed: its int8 model agrees with its fp32 network on 50.0%")
    assert good.verdict.startswith("UPEM 0.06 as deployed, above the winner's 0.05")
    assert choose([bad], 0.9) is None
