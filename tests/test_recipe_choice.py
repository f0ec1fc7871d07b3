"""Which preprocessing recipe a run trains with: decided by the images' size, never by their channel count
(issue 21: colour 28x28 digit folders were trained as photos, cropped and flipped), recorded with its reason,
and kept by banks and runs trained before the rule changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimda.cli import main
from slimda.data.domains import builtin_arrays, harmonise, load_domain, recipe_for
from slimda.data.preprocessing import PHOTO_MIN_SIDE, choose_recipe
from slimda.errors import ConfigError
from slimda.model.bank import load_bank
from slimda.train.trainer import Trainer

TINY = ["--iters", "2", "--batch-size", "4", "--model-batch", "2", "--widths", "0.5,1", "--workers", "0",
        "--threads", "1"]


def digit_folder(root: Path, colour: bool, per_class: int = 4) -> Path:
    """MNIST digits 0 and 1 as 28x28 PNGs, grey or drawn in colour over a coloured background."""
    images, labels = builtin_arrays("mnist")
    for label in (0, 1):
        folder = root / str(label)
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            image = images[index]
            if colour:
                image = np.abs(np.array([200, 90, 30], dtype=np.int16) - image[:, :, None]).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


@pytest.fixture
def digit_pair(tmp_path) -> tuple[Path, Path]:
    return digit_folder(tmp_path / "grey", colour=False), digit_folder(tmp_path / "colour", colour=True)


def test_small_grey_to_colour_folders_train_with_plain_resizing_and_no_flip(tmp_path, digit_pair):
    source, target = digit_pair
    assert load_domain(str(target)).channels == 3  # the colour that used to make them "photos"
    run = tmp_path / "run"
    assert main(["train", "--source", str(source), "--target", str(target), *TINY, "--no-eval", "--out",
                 str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["preprocess"] == "auto" and config["preprocess_used"] == "plain"
    assert "small" in config["preprocess_reason"] and "28 px" in config["preprocess_reason"]
    assert config["preprocessing"]["resize"] is None and config["preprocessing"]["size"] == [28, 28]
    assert config["augment_used"] == "none"
    _, meta = load_bank(run)
    prep = meta.preprocessing
    assert not prep.is_photo and [s["op"] for s in prep.recipe()][:2] == ["decode", "resize"]
    assert "center_crop" not in [s["op"] for s in prep.recipe()]
    # the training stream is the evaluation input itself: no crop, no flip, whatever the seed
    domain = load_domain(str(target))
    train, plain = domain.dataset(prep, augment=config["augment_used"]), domain.dataset(prep)
    for seed in range(4):
        torch.manual_seed(seed)
        assert torch.equal(train[1][0], plain[1][0])
    expected = (np.asarray(Image.open(domain._files[1]).convert("RGB"), np.float32) / 255 - prep.mean) / prep.std
    assert np.abs(plain[1][0].permute(1, 2, 0).numpy() - expected).max() < 1e-5  # every border pixel kept


def test_300px_colour_photos_train_with_resize_crop_and_flip(tmp_path, photo_domains):
    source, target = photo_domains
    run = tmp_path / "run"
    assert main(["train", "--source", str(source), "--target", str(target), "--resolution", "32", *TINY,
                 "--no-eval", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["preprocess_used"] == "photo" and "photo-sized" in config["preprocess_reason"]
    assert config["preprocessing"]["resize"] == 37 and config["augment_used"] == "crop-flip"
    _, meta = load_bank(run)
    assert [s["op"] for s in meta.preprocessing.recipe()][1:3] == ["resize", "center_crop"]


def test_the_rule_decides_by_size_and_init_and_an_explicit_choice_wins(digit_pair, photo_domains):
    small = load_domain(str(digit_pair[1]))
    large = load_domain(str(photo_domains[1]))
    assert small.shorter_side == 28 and large.shorter_side >= 165
    assert recipe_for(small, small).kind == "plain"
    assert recipe_for(large, large).kind == "photo"
    assert recipe_for(small, large).kind == "plain" and "no --init" in recipe_for(small, large).reason
    assert recipe_for(small, large, init=True).kind == "photo"
    assert recipe_for(small, small, init=True).kind == "plain"  # pretrained weights do not make digits photos
    forced = recipe_for(small, small, "photo")
    assert forced.kind == "photo" and "--preprocess photo given" in forced.reason
    assert harmonise(small, small, preprocess="photo").resize == 32
    assert harmonise(large, large, 64, preprocess="plain").resize is None
    assert choose_recipe("auto", PHOTO_MIN_SIDE, PHOTO_MIN_SIDE).kind == "photo"
    assert choose_recipe("auto", PHOTO_MIN_SIDE - 1, 500).kind == "plain"
    with pytest.raises(ConfigError, match="unknown preprocess 'crop'"):
        choose_recipe("crop", 28, 28)


def test_a_bank_trained_with_the_photo_recipe_keeps_it_in_deploys_and_resumes(tmp_path, digit_pair, monkeypatch):
    """Banks trained before the rule changed (small colour images as photos) deploy and resume with the
    recipe they were trained with, not the one the new rule would pick."""
    source, target = digit_pair
    run, out = tmp_path / "run", tmp_path / "deploy"
    original = Trainer.train_step

    def killed_at_1(self, step, *args, **kwargs):
        if step == 1:
            raise KeyboardInterrupt  # as Ctrl-C would: the run stops after its step-1 checkpoint
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", killed_at_1)
    assert main(["train", "--source", str(source), "--target", str(target), *TINY, "--preprocess", "photo",
                 "--checkpoint-every", "1", "--no-eval", "--out", str(run)]) != 0
    monkeypatch.setattr(Trainer, "train_step", original)
    config = json.loads((run / "config.json").read_text())
    assert config["preprocessing"]["resize"] == 32 and config["augment_used"] == "crop-flip"
    # as an older run wrote it: no --preprocess option, its recipe only in "preprocessing"
    del config["preprocess"], config["preprocess_used"], config["preprocess_reason"]
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--out", str(run), "--resume", "--no-eval"]) == 0
    assert (run / "train_log.csv").read_text().splitlines()[-1].startswith("2,")  # step 2 trained by the resume
    _, meta = load_bank(run)
    assert meta.preprocessing.resize == 32
    assert main(["deploy", "--bank", str(run), "--target", str(target), "--flops", "1G", "--no-measure",
                 "--calibration-images", "8", "--score-images", "8", "--population", "4", "--generations", "1",
                 "--workers", "0", "--out", str(out)]) == 0
    manifest = json.loads((out / "cpu-onnxruntime" / "manifest.json").read_text())
    steps = manifest["preprocess"]
    assert [s["op"] for s in steps][1:3] == ["resize", "center_crop"] and steps[1]["shorter_side"] == 32
