"""Where sub-networks are scored (--score-device, --score-amp, --score-layout): options resolved and refused,
faster settings scoring close to the fp32 reference, the exported network always recalibrated in fp32."""

from __future__ import annotations

import pytest
import torch

from conftest import randomise_batchnorm
from slimda.cli import main
from slimda.data.preprocessing import Preprocessing
from slimda.errors import ConfigError
from slimda.model.bank import BankMeta, ModelBank, save_bank
from slimda.model.compute import CPU, Compute, resolve_compute
from slimda.select.evaluate import TargetScorer, evaluate_configs, load_target_images

META = BankMeta(class_names=tuple(str(i) for i in range(10)),
                preprocessing=Preprocessing(size=(28, 28), channels=1, mean=(0.5,), std=(0.5,)), test_head="ca")
NO_GPU = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def scored():
    bank = ModelBank("digits-cnn", 10, 1, ratios=(0.5, 0.75, 1.0))
    randomise_batchnorm(bank, seed=5)
    return bank, load_target_images("digits", META, calibration_images=64, score_images=128)


def test_auto_scores_on_the_cpu_in_fp32_nchw_where_there_is_no_gpu():
    if not NO_GPU:
        pytest.skip("this machine has a GPU: auto picks it")
    assert resolve_compute() == CPU
    assert resolve_compute("cpu", "bf16", "channels-last") == Compute(torch.device("cpu"), torch.bfloat16, True)
    assert resolve_compute("cpu", "bf16", "channels-last").label == "cpu bf16 channels-last"


@pytest.mark.parametrize("args, message", [
    (("cpu", "fp16", "auto"), "--score-amp fp16 needs a CUDA GPU"),
    (("cpu", "auto", "sideways"), "unknown --score-layout 'sideways'"),
    (("tpu", "auto", "auto"), "unknown --score-device 'tpu'"),
    (("cpu", "fp8", "auto"), "unknown --score-amp 'fp8'"),
])
def test_bad_score_options_are_refused_naming_the_option(args, message):
    with pytest.raises(ConfigError, match=message):
        resolve_compute(*args)


@pytest.mark.skipif(not NO_GPU, reason="needs a machine without a CUDA GPU")
def test_score_device_cuda_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    save_bank(ModelBank("digits-cnn", 10, 1, ratios=(0.5, 1.0)), tmp_path / "bank.pt", META)
    code = main(["eval", "--bank", str(tmp_path), "--target", "digits", "--score-device", "cuda"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--score-device cuda asked for, but this machine has no usable CUDA GPU" in err and "Traceback" not in err


def test_bf16_channels_last_scoring_stays_close_to_the_fp32_reference(scored):
    bank, target = scored
    fast = Compute(torch.device("cpu"), torch.bfloat16, True)
    configs = [(f"uniform-{r}", bank.space.uniform(r)) for r in (0.5, 0.75, 1.0)]
    exact = evaluate_configs(bank, configs, target.calibration, target.images, target.labels, heads=("ca",))
    quick = evaluate_configs(bank, configs, target.calibration, target.images, target.labels, heads=("ca",),
                             compute=fast)
    for a, b in zip(exact, quick):
        assert a["config_id"] == b["config_id"]
        assert abs(a["target_acc"] - b["target_acc"]) <= 0.03  # a few of 128 images may flip under bf16
        assert abs(a["upem"] - b["upem"]) <= 0.05 + 0.1 * a["upem"]
    assert any(a["upem"] != b["upem"] for a, b in zip(exact, quick))  # bf16 really ran


def test_the_exported_network_is_recalibrated_in_fp32_whatever_scoring_used(scored):
    bank, target = scored
    config = bank.space.uniform(0.75)
    exact = TargetScorer(bank, target).calibrated(config)
    fast = TargetScorer(bank, target, compute=Compute(torch.device("cpu"), torch.bfloat16, True)).calibrated(config)
    for (name, a), b in zip(exact.state_dict().items(), fast.state_dict().values()):
        assert torch.equal(a, b), name
        assert b.dtype == a.dtype and b.device.type == "cpu"
    assert all(p.is_contiguous() for p in fast.parameters())  # NCHW again: what ONNX export expects


def test_eval_and_deploy_take_the_score_options(tmp_path, capsys):
    save_bank(ModelBank("digits-cnn", 10, 1, ratios=(0.5, 1.0)), tmp_path / "bank.pt", META)
    code = main(["eval", "--bank", str(tmp_path), "--target", "digits", "--width", "0.5", "--csv",
                 "--calibration-images", "32", "--score-amp", "bf16", "--score-layout", "channels-last"])
    assert code == 0 and capsys.readouterr().out.count("\n") == 5  # header + 4 heads
    for command in ("deploy", "bench", "quickstart"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--score-device" in capsys.readouterr().out


@pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU")
def test_cuda_scoring_keeps_the_images_on_the_gpu_and_ranks_as_the_cpu_does(scored):
    bank, target = scored
    gpu = resolve_compute("cuda")
    scorer = TargetScorer(bank, target, compute=gpu)
    assert scorer.images_on_device
    reference = TargetScorer(bank, target)
    configs = [bank.space.uniform(r) for r in (0.5, 0.75, 1.0)]
    on_gpu = [scorer.score(c) for c in configs]
    on_cpu = [reference.score(c) for c in configs]
    for g, c in zip(on_gpu, on_cpu):
        assert abs(g.target_acc - c.target_acc) <= 0.03
    assert scorer.calibrated(configs[0]).head_a.weight.device.type == "cpu"
