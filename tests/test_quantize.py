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
    trainer = Trainer(TrainConfig(iters=60, batch_size=32, model_batch=2, checkpoint_every=60), run,
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
    path.rename(table_path(run, "cpu-onnxruntime"))  # an int8 table where the fp32 one belongs is refused
    with pytest.raises(SlimdaError, match="was timed in int8, not fp32"):
        load_table(run, "cpu-onnxruntime", "fp32")
    table_path(run, "cpu-onnxruntime").rename(path)
    with pytest.raises(SlimdaError, match="no latency table for device cpu-onnxruntime at"):
        load_table(run, "cpu-onnxruntime")  # the fp32 table is another file, not this one
    capsys.readouterr()
    assert main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run), "--out", str(path), *fast]) == 2
    assert "was built in int8, and this build asks for fp32" in capsys.readouterr().err
