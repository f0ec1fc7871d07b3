"""The labelled source split that training never sees (--source-val): disjoint from every step's images,
recorded in config.json, the same on resume, reported in eval.csv; runs from before it resume without one."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import training_killed_at
from slimda.errors import ConfigError
from slimda.train.config import TrainConfig
from slimda.data.domains import SOURCE_VAL_CAP, indices_digest, source_val_split
from slimda.train.trainer import Trainer

TINY = dict(iters=12, batch_size=8, model_batch=2, checkpoint_every=4, log_every=2, eval_calibration_images=64)


def test_the_split_is_a_seeded_share_capped_and_never_the_whole_domain():
    train, held = source_val_split(5000, 0.1, seed=0)
    assert len(held) == 500 and len(train) == 4500 and not set(train) & set(held)
    assert sorted(train + held) == list(range(5000))
    assert source_val_split(5000, 0.1, seed=0) == (train, held) and source_val_split(5000, 0.1, seed=1)[1] != held
    assert len(source_val_split(100_000, 0.1, 0)[1]) == SOURCE_VAL_CAP
    assert source_val_split(40, 0.0, 0) == (list(range(40)), [])
    assert len(source_val_split(1, 0.4, 0)[0]) == 1  # a one-image domain keeps its image for training
    with pytest.raises(ConfigError, match="--source-val"):
        TrainConfig(source_val=0.7).validate()


def test_no_training_step_sees_a_held_out_image_and_resume_keeps_the_split(tmp_path, capsys):
    cfg = TrainConfig(**TINY, source_val=0.1)
    with training_killed_at(6):
        Trainer(cfg, tmp_path / "run", progress=False).fit()
    resumed = Trainer(cfg, tmp_path / "run", progress=False)
    data = resumed.data
    assert data.source_val and not set(data.source_train) & set(data.source_val)
    assert len(data.streams[0]) == len(data.source_train)  # the source stream holds the training part only
    # every key a step draws from the source stream indexes into the training part
    drawn = {data.source_train[i] for step in range(cfg.iters) for stream, i, _ in data.step_keys(step) if stream == 0}
    assert drawn and not drawn & set(data.source_val)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["source_val"] == 0.1 and saved["source_val_images"] == len(data.source_val) == 500
    assert saved["source_val_sha256"] == indices_digest(data.source_val)
    resumed.fit(resume=True)
    again = json.loads((tmp_path / "run" / "config.json").read_text())
    assert again["source_val_sha256"] == saved["source_val_sha256"]  # the same split after the resume
    rows = pd.DataFrame(resumed.evaluate())
    assert rows["source_val_acc"].between(0, 1).all() and rows["est_acc"].between(0, 1).all()
    assert "source_val_acc" in pd.read_csv(tmp_path / "run" / "eval.csv").columns
    # slimda eval finds the run's split again by itself, and refuses when the source no longer gives it
    from slimda.cli import main

    assert main(["eval", "--bank", str(tmp_path / "run"), "--target", "digits", "--width", "0.5", "--head", "ca",
                 "--calibration-images", "64", "--source-val-images", "100", "--csv"]) == 0
    assert "source_val_acc" in capsys.readouterr().out
    saved["source_val_sha256"] = "0" * 16  # as if the source folder had changed since training
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    assert main(["eval", "--bank", str(tmp_path / "run"), "--target", "digits", "--calibration-images", "8"]) == 2
    assert "has changed since" in capsys.readouterr().err


def test_a_run_from_before_the_split_resumes_on_every_source_image(tmp_path):
    from slimda.cli import main

    run = tmp_path / "old"
    with training_killed_at(4):
        Trainer(TrainConfig(**TINY, source_val=0.0), run, progress=False).fit()
    saved = json.loads((run / "config.json").read_text())
    for key in ("source_val", "source_val_images", "source_val_sha256"):
        saved.pop(key)  # as an older slimda wrote it
    (run / "config.json").write_text(json.dumps(saved))
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert "source_val_acc" not in pd.read_csv(run / "eval.csv").columns  # no split: it trained on every image
