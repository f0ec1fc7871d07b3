"""Photos from pretrained weights: --init, photo preprocessing and its manifest recipe, the parallel loader
(resume with workers, a corrupt JPEG named from a worker, the image cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import randomise_batchnorm, training_killed_at
from slimda.cli import main
from slimda.data.domains import harmonise, load_domain
from slimda.errors import ConfigError, DataError
from slimda.model.bank import ModelBank, load_bank
from slimda.model.pretrained import load_init
from slimda.select.evaluate import load_target_images
from slimda.tables import sha256_file
from slimda.train.config import TrainConfig, lr_at
from slimda.train.trainer import Trainer

TINY_PHOTOS = dict(arch="digits-cnn", resolution=32, widths="0.5,1", iters=8, batch_size=4, model_batch=2,
                   checkpoint_every=2, log_every=1, eval_calibration_images=8)


def torchvision_file(tmp_path: Path, arch: str = "resnet18") -> tuple[Path, torch.nn.Module]:
    """A torchvision-layout state dict of a random model (BN randomised): stands in for ImageNet weights."""
    torch.manual_seed(1)
    model = getattr(torchvision.models, arch)()
    randomise_batchnorm(model, seed=2)
    path = tmp_path / f"{arch}.pth"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_init_from_torchvision_weights_loads_exactly_and_trains_backbone_slower(tmp_path, photo_domains):
    source, target = photo_domains
    weights, reference = torchvision_file(tmp_path)
    out = tmp_path / "run"
    code = main(["train", "--arch", "resnet18", "--init", str(weights), "--source", str(source), "--target",
                 str(target), "--iters", "2", "--batch-size", "4", "--model-batch", "2", "--widths", "0.5,1",
                 "--resolution", "32", "--workers", "1", "--lr", "0.02", "--no-eval", "--out", str(out)])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["init_sha256"] == sha256_file(weights) and config["init_kind"] == "torchvision"
    assert config["init_skipped_keys"] == ["fc.weight", "fc.bias"] and config["workers_used"] == 1
    assert config["augment_used"] == "crop-flip" and config["preprocessing"]["resize"] == 37
    groups = {g["name"]: g for g in config["param_groups"]}
    assert groups["backbone"]["lr_mult"] == 0.1 and groups["backbone"]["lr"] == pytest.approx(0.002)
    assert groups["heads"]["lr"] == pytest.approx(0.02)

    cfg = TrainConfig(source=str(source), target=str(target), arch="resnet18", init=str(weights), resolution=32,
                      widths="0.5,1", iters=4, batch_size=4, model_batch=2, lr=0.02)
    trainer = Trainer(cfg, tmp_path / "lib", progress=False)
    trainer.load_init()
    bank = trainer.bank.eval()
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(bank.backbone(x), reference(x))  # full width: exactly the loaded network
    half = bank.extract(bank.space.uniform(0.5))
    assert torch.equal(half.backbone.conv1.weight, reference.conv1.weight[:32])  # leading channels
    trainer.train_step(0)
    rates = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert rates == {"backbone": pytest.approx(lr_at(cfg, 0) * 0.1), "heads": pytest.approx(lr_at(cfg, 0))}
    assert TrainConfig(init=None).resolved_backbone_lr_mult == 1.0


def test_init_refuses_bad_files_and_names_what_does_not_fit(tmp_path, capsys):
    bank = ModelBank("resnet18", 2)
    names = ["a", "b"]
    with pytest.raises(ConfigError, match="does not exist"):
        load_init(bank, tmp_path / "missing.pth", names, 3)
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(ConfigError, match="holds a list, not a state dict"):
        load_init(bank, tmp_path / "list.pth", names, 3)
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ConfigError, match="cannot read .*text.pth as PyTorch weights"):
        load_init(bank, tmp_path / "text.pth", names, 3)
    other, _ = torchvision_file(tmp_path, "mobilenet_v2")
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    with pytest.raises(ConfigError, match=r"does not fit resnet18 \(the file looks like a MobileNetV2\).*"
                                          r"missing from the file: conv1.weight.*features.0.0.weight"):
        load_init(bank, other, names, 3)
    assert all(torch.equal(before[k], v) for k, v in bank.state_dict().items())  # nothing loaded

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match="refused to load .*evil.pth.*Nothing in it was run"):
        load_init(bank, tmp_path / "evil.pth", names, 3)
    assert not marker.exists()
    assert main(["train", "--arch", "resnet18", "--init", str(tmp_path / "evil.pth"), "--out",
                 str(tmp_path / "run")]) == 2
    assert "refused to load" in capsys.readouterr().err and not marker.exists()


def test_init_from_a_bank_re_adapts_it(tmp_path, photo_domains):
    source, target = photo_domains
    first = Trainer(TrainConfig(source=str(source), target=str(target), **{**TINY_PHOTOS, "iters": 2}),
                    tmp_path / "first", progress=False)
    first.fit()
    cfg = TrainConfig(source=str(source), target=str(target), init=str(tmp_path / "first" / "bank.pt"),
                      **{**TINY_PHOTOS, "iters": 2})
    again = Trainer(cfg, tmp_path / "again", progress=False)
    again.load_init()
    saved, _ = load_bank(tmp_path / "first")
    assert all(torch.equal(v, again.bank.state_dict()[k]) for k, v in saved.state_dict().items())
    assert again.init_record.kind == "bank" and cfg.resolved_backbone_lr_mult == 0.1
    with pytest.raises(ConfigError, match="is a digits-cnn bank; this run trains resnet18"):
        load_init(ModelBank("resnet18", 2), tmp_path / "first" / "bank.pt", ["china", "flower"], 3)
    with pytest.raises(ConfigError, match="re-adapting a bank needs the same classes"):
        load_init(ModelBank("digits-cnn", 2), tmp_path / "first" / "bank.pt", ["cat", "dog"], 3)


def test_photo_eval_is_resize_then_centre_crop_and_training_crops_and_flips(photo_domains):
    source, target = photo_domains
    domain = load_domain(str(source))
    prep = harmonise(domain, load_domain(str(target)), 64)
    assert prep.resize == 73 and prep.is_photo
    image = Image.open(domain._files[0]).convert("RGB")
    w, h = image.size
    resized = image.resize((int(73 * w / h), 73), Image.BILINEAR)  # the shorter side is the height here
    top, left = round((73 - 64) / 2), round((resized.width - 64) / 2)
    expected = np.asarray(resized, dtype=np.float32)[top:top + 64, left:left + 64] / 255.0
    expected = (expected - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    x, _ = domain.dataset(prep)[0]
    assert np.abs(x.permute(1, 2, 0).numpy() - expected).max() < 1e-5
    train = domain.dataset(prep, augment="crop-flip")
    crops = set()
    for seed in range(6):
        torch.manual_seed(seed)
        crops.add(train[0][0].sum().item())
    assert len(crops) > 1  # random crops and flips
    digits = harmonise(load_domain("mnist"), load_domain("digits"))
    assert digits.resize is None and not digits.is_photo


def test_resume_after_kill_with_workers_equals_uninterrupted_run(tmp_path, photo_domains):
    source, target = photo_domains
    cfg = TrainConfig(source=str(source), target=str(target), workers=2, **TINY_PHOTOS)
    Trainer(cfg, tmp_path / "full", progress=False).fit()
    in_process = TrainConfig(source=str(source), target=str(target), workers=0, **TINY_PHOTOS)
    Trainer(in_process, tmp_path / "zero", progress=False).fit()

    with training_killed_at(5):
        Trainer(cfg, tmp_path / "cut", progress=False).fit()
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 4
    Trainer(cfg, tmp_path / "cut", progress=False).fit(resume=True)
    full, _ = load_bank(tmp_path / "full")
    for other in ("cut", "zero"):  # resumed, and made without workers: the same weights
        bank, _ = load_bank(tmp_path / other)
        for (name, x), (_, y) in zip(full.state_dict().items(), bank.state_dict().items()):
            assert torch.equal(x, y), (other, name)
    import pandas as pd

    log = pd.read_csv(tmp_path / "cut" / "train_log.csv")
    assert list(log["step"]) == list(range(1, 9))
    assert (log["images_per_s"] > 0).all() and log["elapsed_s"].is_monotonic_increasing


def test_corrupt_jpeg_is_named_from_a_worker(tmp_path, photo_domains):
    source, target = photo_domains
    broken = tmp_path / "target"
    shutil.copytree(target, broken)
    bad = broken / "china" / "001.jpg"
    bad.write_bytes(bad.read_bytes()[:300])  # a JPEG cut short, as a failed copy leaves it
    cfg = TrainConfig(source=str(source), target=str(broken), workers=1, **TINY_PHOTOS)
    with pytest.raises(DataError, match=r"cannot read image .*china/001\.jpg"):
        Trainer(cfg, tmp_path / "run", progress=False).fit()
    bank = ModelBank("digits-cnn", 2, 3, ratios=(0.5, 1.0))
    from slimda.model.bank import BankMeta

    meta = BankMeta(("china", "flower"), harmonise(load_domain(str(source)), load_domain(str(broken)), 32))
    with pytest.raises(DataError, match=r"cannot read image .*china/001\.jpg"):
        load_target_images(str(broken), meta, calibration_images=4, workers=2)
    del bank


def test_cached_images_give_the_same_items_and_workers_must_not_be_negative(photo_domains):
    source, target = photo_domains
    domain = load_domain(str(source))
    prep = harmonise(domain, load_domain(str(target)), 32)
    plain = [domain.dataset(prep)[i][0] for i in range(len(domain))]
    domain.cache_images(prep, workers=1)
    cached = domain.dataset(prep)
    assert cached.cache is not None
    assert all(torch.equal(a, cached[i][0]) for i, a in enumerate(plain))
    with pytest.raises(ConfigError, match="--workers must be 0"):
        TrainConfig(workers=-1).validate()


def recipe_input(path: Path, steps: list[dict]) -> np.ndarray:
    """The model input made from a manifest's ``preprocess`` steps alone, with PIL and NumPy (no slimda code)."""
    out = None
    for step in steps:
        op = step["op"]
        if op == "decode":
            image = Image.open(path).convert(step["color"])
        elif op == "resize" and "shorter_side" in step:
            s, (w, h) = step["shorter_side"], image.size
            size = (int(s * w / h), s) if h <= w else (s, int(s * h / w))
            image = image.resize(size, Image.BILINEAR)
        elif op == "resize":
            image = image.resize(tuple(reversed(step["size_hw"])), Image.BILINEAR)
        elif op == "center_crop":
            ch, cw = step["size_hw"]
            top, left = round((image.height - ch) / 2), round((image.width - cw) / 2)
            image = image.crop((left, top, left + cw, top + ch))
        elif op == "scale":
            out = np.asarray(image, dtype=np.float32) / step["divide_by"]
            out = out[:, :, None] if out.ndim == 2 else out
        elif op == "normalize":
            out = (out - np.asarray(step["mean"], np.float32)) / np.asarray(step["std"], np.float32)
        elif op == "layout":
            assert step["order"] == "NCHW"
            out = out.transpose(2, 0, 1)[None].astype(step["dtype"])
        else:
            raise AssertionError(f"unknown recipe step {op}")
    return out


def test_the_manifest_recipe_alone_reproduces_the_deployed_models_input(tmp_path, photo_domains):
    import onnxruntime as ort

    source, target = photo_domains
    run, out = tmp_path / "run", tmp_path / "deploy"
    assert main(["train", "--source", str(source), "--target", str(target), "--resolution", "32", "--widths",
                 "0.5,1", "--iters", "3", "--batch-size", "4", "--model-batch", "2", "--workers", "1", "--no-eval",
                 "--out", str(run)]) == 0
    assert main(["deploy", "--bank", str(run), "--target", str(target), "--flops", "1G", "--no-measure",
                 "--calibration-images", "8", "--score-images", "8", "--population", "4", "--generations", "1",
                 "--workers", "1", "--out", str(out)]) == 0
    manifest = json.loads((out / "cpu-onnxruntime" / "manifest.json").read_text())
    steps = manifest["preprocess"]
    assert [s["op"] for s in steps] == ["decode", "resize", "center_crop", "scale", "normalize", "layout"]
    assert steps[1]["shorter_side"] == 37 and steps[2]["size_hw"] == [32, 32] and manifest["resize"] == 37
    session = ort.InferenceSession(str(out / "cpu-onnxruntime" / "model.onnx"), providers=["CPUExecutionProvider"])
    _, meta = load_bank(run)
    domain = load_domain(str(target))
    dataset = domain.dataset(meta.preprocessing)
    for i in (0, 5, 9):
        from_recipe = recipe_input(domain._files[i], steps)
        assert list(from_recipe.shape) == manifest["input_shape"]
        from_slimda = dataset[i][0][None].numpy()
        assert np.abs(from_recipe - from_slimda).max() < 1e-5
        y_recipe = session.run(None, {manifest["input_name"]: from_recipe})[0]
        y_slimda = session.run(None, {manifest["input_name"]: from_slimda})[0]
        assert np.abs(y_recipe - y_slimda).max() < 1e-4 and y_recipe.argmax() == y_slimda.argmax()


def test_a_loader_with_workers_puts_back_the_sigchld_handler():
    """DataLoader's SIGCHLD handler, left installed, made a later subprocess's exit crash the process once
    OpenVINO and ONNX Runtime had run (segfault in the full suite); the loader puts the old handler back."""
    import signal

    from slimda.data.loading import loader_of

    before = signal.getsignal(signal.SIGCHLD)
    assert [b.tolist() for b in loader_of(list(range(6)), [[0, 1], [2, 3]], workers=1)] == [[0, 1], [2, 3]]
    assert signal.getsignal(signal.SIGCHLD) == before
    assert [b.tolist() for b in loader_of(list(range(6)), [[4, 5]], workers=1)] == [[4, 5]]  # and again
    assert signal.getsignal(signal.SIGCHLD) == before
