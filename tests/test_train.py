"""The trainer: gradient routing, sampling, a short run, resume, DDP, UPEM and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import training_killed_at
from slimda.data.sample_domains import make_photo_domains
from slimda.errors import ConfigError, DataError, SlimdaError
from slimda.model.bank import ModelBank, load_bank
from slimda.select.upem import DISTANCES, upem
from slimda.train.config import TrainConfig
from slimda.train.objectives import create_objective, objective_names, register
from slimda.train.objectives.base import Batch
from slimda.train.objectives.common import adaptation_weight, class_means_of_softmax, reverse_gradient, soft_label_loss
from slimda.train.objectives.dann import DANN
from slimda.train.seed import distillation_loss, seed_ensemble
from slimda.train.trainer import ModelBatch, Trainer, sandwich_configs

K = 10
TINY = dict(iters=12, batch_size=8, model_batch=2, checkpoint_every=4, log_every=1, eval_calibration_images=64)


def tiny_batch(ns: int = 6, nt: int = 5) -> Batch:
    gen = torch.Generator().manual_seed(0)
    return Batch(torch.randn(ns, 1, 28, 28, generator=gen), torch.arange(ns) % K,
                 torch.randn(nt, 1, 28, 28, generator=gen) * 2 + 0.5)


def grads(loss: torch.Tensor, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor | None]:
    got = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
    return dict(zip(params, got))


def touched(g: dict[str, torch.Tensor | None]) -> set[str]:
    return {name for name, value in g.items() if value is not None and value.abs().sum() > 0}


def groups(model: ModelBatch) -> dict[str, dict[str, torch.nn.Parameter]]:
    named = dict(model.named_parameters())
    out: dict[str, dict[str, torch.nn.Parameter]] = {"backbone": {}, "st": {}, "a": {}, "disc": {}}
    for name, p in named.items():
        key = ("backbone" if ".backbone." in f".{name}" else "st" if "head_st" in name
               else "a" if "head_a" in name else "disc")
        out[key][name] = p
    return out


def model_batch(objective: str) -> ModelBatch:
    torch.manual_seed(0)
    bank = ModelBank("digits-cnn", K, 1)
    return ModelBatch(bank, create_objective(objective, bank.backbone.feature_dim, bank.backbone.feature_site)).train()


def run_models(objective: str):
    model = model_batch(objective)
    batch = tiny_batch()
    configs = [model.bank.space.largest(), model.bank.space.sample_many(1, seed=3)[0]]
    results = model([batch.source, batch.target], configs, 0.7)
    parts = [model.objective.losses(r, batch, K, 0.7, None) for r in results]
    return model, batch, results, parts


def test_symnet_routes_classifier_losses_to_heads_and_feature_losses_to_backbone():
    model, _, _, parts = run_models("symnet")
    g = groups(model)
    classifier = sum(p["task_s"] + p["task_t"] + p["domain"] for p in parts)
    features = sum(p["category_confusion"] + p["domain_confusion"] + p["entropy"] for p in parts)
    for name in ("backbone", "st", "a"):
        assert bool(touched(grads(classifier, g[name]))) == (name == "st"), name
        assert bool(touched(grads(features, g[name]))) == (name == "backbone"), name
    # every backbone parameter of the largest model gets a feature gradient
    assert touched(grads(features, g["backbone"])) == {n for n in g["backbone"]}


def test_ostc_ca_learns_only_from_seed_and_cs_ct_only_from_dc():
    model, batch, results, parts = run_models("symnet")
    g = groups(model)
    ns, nt = batch.source.shape[0], batch.target.shape[0]
    ensemble = seed_ensemble([model.objective.class_probabilities(r.st[ns:ns + nt].detach(), K) for r in results])
    seed = sum(distillation_loss(r.a[ns:ns + nt], ensemble) for r in results)
    dc = sum(sum(p.values()) for p in parts)
    assert touched(grads(seed, g["a"])) and touched(grads(seed, g["backbone"]))
    assert not touched(grads(seed, g["st"]))
    assert touched(grads(dc, g["st"])) and not touched(grads(dc, g["a"]))


def test_confusion_routes_domain_classifier_and_confusion_apart():
    model, _, _, parts = run_models("confusion")
    g = groups(model)
    domain = sum(p["domain"] for p in parts)
    confusion = sum(p["domain_confusion"] for p in parts)
    assert touched(grads(domain, g["disc"])) and not touched(grads(domain, g["backbone"]))
    assert touched(grads(confusion, g["backbone"])) and not touched(grads(confusion, g["disc"]))


def test_dann_reverses_the_domain_gradient_into_the_backbone():
    model = model_batch("dann")
    bank, discriminator = model.bank, model.objective.discriminator
    batch = tiny_batch()
    x = torch.cat([batch.source, batch.target])
    config = [bank.space.largest()]
    with torch.no_grad():
        f = bank.backbone(x)
    # the gradient through the reversal layer is minus coeff times the plain one
    f = f.clone().requires_grad_(True)
    plain = torch.autograd.grad(discriminator(f).sum(), f)[0]
    reversed_ = torch.autograd.grad(discriminator(reverse_gradient(f, 0.3)).sum(), f)[0]
    assert torch.allclose(reversed_, -0.3 * plain)
    r = model([batch.source, batch.target], config, 0.3)[0]
    assert r.path.domain.shape == (11, 2)


def test_soft_labels_pull_target_predictions_to_class_soft_label():
    logits = torch.zeros(2, 3, requires_grad=True)
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    loss = soft_label_loss(logits, torch.tensor([0, 1]), soft, temperature=2.0)
    loss.backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1, 1] < 0  # descent raises the soft label's top class
    sums, counts = class_means_of_softmax(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 1, 2]), 3, 2.0)
    assert counts.tolist() == [2, 3, 1] and torch.allclose(sums.sum(1), counts)


def test_seed_ensemble_weights_confident_models_and_sharpens():
    confident = torch.tensor([[0.9, 0.05, 0.05]])
    unsure = torch.tensor([[0.2, 0.5, 0.3]])
    ens = seed_ensemble([confident, unsure], "max", temperature=1.0)
    plain_mean = 0.5 * (confident + unsure)
    assert ens[0, 0] > plain_mean[0, 0]
    sharp = seed_ensemble([confident, unsure], "max", temperature=0.5)
    assert sharp[0, 0] > ens[0, 0] and torch.allclose(sharp.sum(1), torch.ones(1))
    ent = seed_ensemble([confident, unsure], "entropy", temperature=1.0)
    assert ent[0, 0] > plain_mean[0, 0]


def test_sandwich_sampling_is_seeded_and_keeps_largest_and_smallest():
    bank = ModelBank("digits-cnn", K, 1)
    for step in range(20):
        configs = sandwich_configs(bank, step, seed=5, count=4)
        assert configs == sandwich_configs(bank, step, seed=5, count=4)
        assert configs[0] == bank.space.largest() and configs[1] == bank.space.smallest() and len(configs) == 4
    assert sandwich_configs(bank, 1, 5, 4) != sandwich_configs(bank, 2, 5, 4)


def test_short_run_lowers_source_loss_and_writes_outputs(tmp_path):
    cfg = TrainConfig(**{**TINY, "iters": 20, "lr": 0.05, "batch_size": 16, "objective": "symnet"})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.fit()
    import pandas as pd

    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    assert list(log["step"]) == list(range(1, 21))
    assert {"task_s", "domain", "category_confusion", "entropy", "seed", "lambda", "lr"} <= set(log.columns)
    assert log["source_ce_largest"].tail(5).mean() < log["source_ce_largest"].head(5).mean()
    rows = trainer.evaluate()
    ev = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert len(ev) == len(rows) == 6 * 4
    assert {"config_id", "width", "head", "target_acc", "upem", "flops_m", "params_m"} <= set(ev.columns)
    assert ev.loc[ev["config"] == "largest", "upem"].eq(0).all()
    bank, meta = load_bank(tmp_path / "run")
    assert meta.class_names == tuple(str(i) for i in range(10)) and meta.preprocessing.size == (28, 28)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**TINY, target_labeled=2)  # DANN (default), soft labels and SEED all resume exactly
    Trainer(cfg, tmp_path / "full", progress=False).fit()

    with training_killed_at(6):
        Trainer(cfg, tmp_path / "cut", progress=False).fit()
    assert not (tmp_path / "cut" / "bank.pt").exists()
    with pytest.raises(SlimdaError, match="already holds a run"):
        Trainer(cfg, tmp_path / "cut", progress=False).fit()
    resumed = Trainer(cfg, tmp_path / "cut", progress=False)
    resumed.fit(resume=True)
    assert resumed.step == 12
    a, _ = load_bank(tmp_path / "full")
    b, _ = load_bank(tmp_path / "cut")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    import pandas as pd

    assert list(pd.read_csv(tmp_path / "cut" / "train_log.csv")["step"]) == list(range(1, 13))


@register
class ExplodingDANN(DANN):
    """An objective added the way a user adds one: a subclass and ``@register``. Its loss turns NaN at step 6."""

    name = "test-exploding-dann"

    def adaptation_losses(self, out, batch, k, lam):
        parts = super().adaptation_losses(out, batch, k, lam)
        if lam > adaptation_weight(5 / 12):  # from step 6 on
            parts["task_s"] = parts["task_s"] * float("nan")
        return parts


def test_an_objective_is_one_registered_module():
    assert objective_names()[:4] == ("symnet", "confusion", "dann", "source-only")
    assert "test-exploding-dann" in objective_names()
    with pytest.raises(ConfigError, match="unknown objective 'magic'; choose one of symnet, confusion"):
        create_objective("magic", 8, "stem")


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    with pytest.raises(SlimdaError, match=r"non-finite at step 6 .*task_s=nan.*last good checkpoint"):
        Trainer(TrainConfig(**TINY, objective="test-exploding-dann"), tmp_path / "run", progress=False).fit()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4


@pytest.mark.parametrize("change, message", [
    ({"objective": "magic"}, "unknown objective 'magic'"),
    ({"arch": "vgg"}, "unknown arch 'vgg'"),
    ({"test_head": "cz"}, "unknown test-head 'cz'"),
    ({"model_batch": 1}, "--model-batch must be at least 2"),
    ({"widths": "0.5,1.5"}, "must lie in \\(0, 1\\]"),
    ({"widths": "0:1:0.25"}, "must lie in \\(0, 1\\]"),
])
def test_bad_options_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).validate()


def _folder(root: Path, classes: list[str]) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), color=30 * i).save(root / c / f"{i}.png")
    return root


def test_bad_target_domains(tmp_path):
    source = _folder(tmp_path / "src", ["a", "b"])
    other = _folder(tmp_path / "other", ["a", "c"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="class"):
        Trainer(TrainConfig(source=str(source), target=str(other), **TINY), tmp_path / "r1", progress=False)
    with pytest.raises(DataError, match="empty"):
        Trainer(TrainConfig(source=str(source), target=str(empty), **TINY), tmp_path / "r2", progress=False)


def test_upem_is_zero_on_the_anchor_and_orders_a_constructed_case():
    gen = torch.Generator().manual_seed(0)
    anchor = torch.softmax(torch.randn(50, 5, generator=gen) * 3, dim=1)
    noise = torch.softmax(torch.randn(50, 5, generator=gen) * 3, dim=1)
    near = 0.9 * anchor + 0.1 * noise
    far = 0.3 * anchor + 0.7 * noise
    for distance in DISTANCES:  # strict: a distance that always returned 0 would fail here
        assert upem(anchor, anchor, distance) == 0.0
        assert 0.0 <= upem(near, anchor, distance) < upem(far, anchor, distance), distance
    with pytest.raises(ConfigError, match="unknown UPEM distance"):
        upem(anchor, anchor, "cosine")


def test_cli_train_and_eval_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = tmp_path / "run"
    args = ["--out", str(run), "--iters", "4", "--batch-size", "8", "--model-batch", "2", "--log-every", "2"]
    done = subprocess.run([sys.executable, "-m", "slimda.cli", "train", *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "uniform-0.5" in done.stdout and (run / "eval.csv").exists()
    again = subprocess.run([sys.executable, "-m", "slimda.cli", "train", *args], capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    diff = subprocess.run([sys.executable, "-m", "slimda.cli", "train", "--out", str(run), "--resume", "--lr", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert diff.returncode == 2 and "--lr 1.0 (run has 0.01)" in diff.stderr
    ev = subprocess.run([sys.executable, "-m", "slimda.cli", "eval", "--bank", str(run), "--target", "digits",
                         "--width", "0.5", "--head", "ca", "--calibration-images", "64", "--csv"],
                        capture_output=True, text=True, env=env, timeout=300)
    assert ev.returncode == 0, ev.stderr
    lines = ev.stdout.strip().splitlines()
    assert lines[0].startswith("config,config_id,width,head,target_acc,upem") and len(lines) == 2
    bad = subprocess.run([sys.executable, "-m", "slimda.cli", "eval", "--bank", str(tmp_path), "--target", "digits"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "no model bank at" in bad.stderr


def test_torchrun_two_processes_train_one_bank(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    run = tmp_path / "ddp"
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "slimda.cli", "train", "--out", str(run),
         "--iters", "6", "--batch-size", "8", "--model-batch", "3", "--no-eval", "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "weights identical on 2 ranks" in done.stderr
    assert (run / "bank.pt").exists()


def test_mixed_precision_runs_the_forward_in_bf16_and_the_losses_in_float32(monkeypatch):
    from slimda.train import trainer as trainer_module
    from slimda.train.objectives.base import ModelOutputs

    seen: dict[str, list] = {"heads": [], "ensemble": []}
    to_float, ensemble = ModelOutputs.to_float, trainer_module.seed_ensemble

    def spy_to_float(self):
        seen["heads"].append(self.a.dtype)
        return to_float(self)

    def spy_ensemble(probs, *args):
        seen["ensemble"] += [p.dtype for p in probs]
        return ensemble(probs, *args)

    monkeypatch.setattr(ModelOutputs, "to_float", spy_to_float)
    monkeypatch.setattr(trainer_module, "seed_ensemble", spy_ensemble)
    trainer = Trainer(TrainConfig(**TINY, amp="bf16"), "unused", progress=False)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    log = trainer.train_step(0)
    assert all(torch.isfinite(torch.tensor(v)) for v in log.values())
    assert set(seen["heads"]) == {torch.bfloat16} and set(seen["ensemble"]) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay float32
    with pytest.raises(ConfigError, match="--amp fp16 needs a CUDA GPU"):
        Trainer(TrainConfig(**TINY, amp="fp16"), "unused", progress=False)
    assert Trainer(TrainConfig(**TINY), "unused", progress=False).amp_dtype is None  # auto: off on the CPU


@pytest.mark.parametrize("labeled, seed", [(0, True), (2, True), (0, False)])
def test_per_model_backward_gives_the_joint_steps_weights(labeled, seed):
    """One backward per model (less memory) is the same optimisation step as one backward of the sum."""
    weights = {}
    for mode in ("joint", "per-model"):
        trainer = Trainer(TrainConfig(**{**TINY, "model_batch": 3}, target_labeled=labeled, seed_ensemble=seed,
                                      backward=mode), "unused", progress=False)
        for step in range(2):
            trainer.train_step(step)
        weights[mode] = trainer.model.state_dict()
    for name, joint in weights["joint"].items():
        other = weights["per-model"][name]
        assert torch.allclose(joint.float(), other.float(), rtol=1e-4, atol=1e-6), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_amp_step_of_a_resnet50_bank_is_finite(tmp_path):
    source, target = make_photo_domains(tmp_path, per_class=8)
    cfg = TrainConfig(source=str(source), target=str(target), arch="resnet50", batch_size=8, model_batch=4,
                      iters=2, resolution=224, device="cuda", amp="auto", workers=2)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.amp_dtype in (torch.bfloat16, torch.float16)
    log = trainer.train_step(0)
    assert all(torch.isfinite(torch.tensor(v)) for v in log.values()), log


def test_a_run_into_a_file_prints_progress_lines_and_logs_its_speed(tmp_path, capsys):
    cfg = TrainConfig(**{**TINY, "iters": 6, "print_every": 3})
    Trainer(cfg, tmp_path / "run", progress=True).fit()  # stderr is captured here: not a terminal
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["3/6", "6/6"]
    assert all(" img/s " in ln and " ETA " in ln and " total " in ln for ln in lines)
    import pandas as pd

    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    assert (log["images_per_s"] > 0).all() and log["elapsed_s"].is_monotonic_increasing
