"""One SlimDA training run: a whole bank of widths adapted to an unlabelled target domain.

Each step draws a *model batch* (sandwich rule: largest, smallest and random configurations, seeded from
the step so every DDP rank draws the same), runs every model on source + target images, and sums the
intra-model adaptation loss ``L_dc`` (SymNet, domain confusion, DANN or source-only) with SEED's
distillation of the model batch's ensemble into the head Ca (OSTC). Batches and configurations are a
function of (seed, step, rank), so a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from slimda.train import losses
from slimda.model.bank import HEADS, ModelBank, atomic_torch_save, save_bank
from slimda.errors import ConfigError, SlimdaError
from slimda.model.ops import set_widths
from slimda.model.space import WidthConfig, parse_ratios
from slimda.tables import write_csv_atomic, write_json_atomic

OBJECTIVES: tuple[str, ...] = ("symnet", "confusion", "dann", "source-only")
CONFIDENCES: tuple[str, ...] = ("max", "entropy")
LR_SCHEDULES: tuple[str, ...] = ("anneal", "cosine", "constant")
RUN_FILES = ("config.json", "checkpoint.pt", "bank.pt", "train_log.csv", "eval.csv")


@dataclass
class TrainConfig:
    """Everything that determines a run; written to ``RUN/config.json``."""

    source: str = "mnist"
    target: str = "digits"
    arch: str = "digits-cnn"
    iters: int = 1500
    # DANN, not the paper's SymNet, by measurement on mnist -> digits (1000 steps, m=4, seed 0, target
    # accuracy smallest/0.5x/largest): DANN+SEED 94.3/94.1/94.2 %, SymNet+SEED 80.6/80.6/80.6 %,
    # source-only bank 82.5/85.4/87.3 %. SymNet stays available with --objective symnet.
    objective: str = "dann"
    seed_ensemble: bool = True  # SEED + OSTC; False is the plain "SymNet on a slimmable bank" baseline
    model_batch: int = 4
    widths: str = "0.25:1:0.125"
    seed_confidence: str = "max"
    seed_temperature: float = 0.5
    seed_weight: float = 1.0
    test_head: str = "ca"
    target_labeled: int = 0  # labelled target images per class (semi-supervised; soft labels)
    soft_temperature: float = 2.0
    soft_weight: float = 0.1
    confusion_weight: float = 1.0
    batch_size: int = 64
    lr: float = 0.01
    lr_schedule: str = "anneal"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    resolution: int | None = None
    checkpoint_every: int = 250
    log_every: int = 10
    eval_calibration_images: int = 1024
    eval_distance: str = "kl"

    def validate(self) -> None:
        from slimda.backbones import list_backbones
        from slimda.select.upem import DISTANCES

        choices = {"objective": OBJECTIVES, "seed_confidence": CONFIDENCES, "test_head": HEADS,
                   "lr_schedule": LR_SCHEDULES, "arch": tuple(list_backbones()), "eval_distance": DISTANCES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; "
                                  f"choose one of {', '.join(allowed)}")
        single_width = len(parse_ratios(self.widths)) == 1  # one network: nothing to sandwich
        if self.model_batch < 2 and not (single_width and self.model_batch == 1):
            raise ConfigError(f"--model-batch must be at least 2 (largest and smallest), got {self.model_batch}")
        positive = {"iters": self.iters, "batch_size": self.batch_size, "lr": self.lr,
                    "seed_temperature": self.seed_temperature, "soft_temperature": self.soft_temperature,
                    "checkpoint_every": self.checkpoint_every, "log_every": self.log_every}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.target_labeled < 0:
            raise ConfigError(f"--target-labeled must be 0 or more, got {self.target_labeled}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}")
        return cls(**data)


# ------------------------------------------------------------------------------------------ sampling


def sandwich_configs(bank: ModelBank, step: int, seed: int, count: int) -> list[WidthConfig]:
    """The model batch of ``step``: largest, smallest, then ``count - 2`` random configurations.

    Seeded from (seed, step) only, so every rank of a distributed run and a resumed run draw the same.
    """
    rng = random.Random(seed * 1_000_003 + step)
    space = bank.space
    if count == 1:  # a single-width "bank" trains one network
        return [space.largest()]
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(count - 2)]


def step_indices(size: int, batch: int, seed: int, step: int, stream: int, rank: int = 0) -> torch.Tensor:
    """Indices of one batch drawn with replacement, a pure function of (seed, step, stream, rank)."""
    gen = torch.Generator().manual_seed(((seed * 7919 + stream) * 104_729 + rank) * 1_000_003 + step)
    return torch.randint(0, size, (batch,), generator=gen)


def lr_at(cfg: TrainConfig, progress: float) -> float:
    if cfg.lr_schedule == "anneal":  # DANN / SymNet schedule
        return cfg.lr / (1.0 + 10.0 * progress) ** 0.75
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


# ------------------------------------------------------------------------------------------ the model


class ModelBatch(nn.Module):
    """The bank and its domain discriminator; ``forward`` runs every model of a model batch.

    All head outputs a loss needs are computed inside ``forward`` while that model's widths are active
    (the heads are slimmable too), and inside one ``forward`` call so that DistributedDataParallel sees
    one forward per backward.
    """

    def __init__(self, bank: ModelBank, objective: str) -> None:
        super().__init__()
        self.bank = bank
        self.objective = objective
        self.discriminator = (
            losses.DomainDiscriminator(bank.backbone.feature_dim, bank.backbone.feature_site)
            if objective in ("confusion", "dann") else None
        )

    def forward(self, domains: Sequence[torch.Tensor], configs: Sequence[WidthConfig], grl_coeff: float) -> list[dict]:
        """``domains``: one image batch per domain (source; target with any labelled target images).

        Each domain goes through the backbone on its own, so BatchNorm normalises it with its own batch
        statistics, as SymNet's reference code does; evaluation recalibrates on target images to match.
        Returns per model the head outputs over all images concatenated in ``domains`` order.
        """
        results = []
        for config in configs:
            self.bank.set_config(config)
            if self.discriminator is not None:  # its first layer reads the feature width too
                set_widths(self.discriminator, config.as_dict())
            f = torch.cat([self.bank.backbone(x) for x in domains])
            head_st, head_a = self.bank.head_st, self.bank.head_a
            r = {
                "st_det": head_st(f.detach()),  # classifier path: updates heads only
                "a": head_a(f),  # SEED: Ca and the backbone
                "a_det": head_a(f.detach()),  # without SEED: Ca learns from source labels only
            }
            if self.objective == "symnet":
                r["st_frozen"] = losses.frozen_linear(head_st, f)  # feature path: updates backbone only
            else:
                r["st"] = head_st(f)
            if self.objective == "confusion":
                r["disc_det"] = self.discriminator(f.detach())
                r["disc_frozen"] = self.discriminator(f, frozen=True)
            elif self.objective == "dann":
                r["disc_grl"] = self.discriminator(losses.reverse_gradient(f, grl_coeff))
            results.append(r)
        self.bank.set_config(self.bank.space.largest())
        return results


@dataclass
class Batch:
    source: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor
    labeled_target: torch.Tensor | None = None
    labeled_target_labels: torch.Tensor | None = None


def model_losses(
    r: dict, batch: Batch, cfg: TrainConfig, k: int, lam: float, soft_labels: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """``L_dc`` components of one model of the model batch (without SEED)."""
    ns, nt = batch.source.shape[0], batch.target.shape[0]
    y = batch.labels
    out: dict[str, torch.Tensor] = {}

    def split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return t[:ns], t[ns:ns + nt], t[ns + nt:]

    if cfg.objective == "symnet":
        det_s, det_t, det_l = split(r["st_det"])
        frz_s, frz_t, frz_l = split(r["st_frozen"])
        cls = losses.symnet_classifier_losses(det_s, det_t, y, k)
        feat = losses.symnet_feature_losses(frz_s, frz_t, y, k)
        out.update(cls)
        out["category_confusion"] = feat["category_confusion"]
        out["domain_confusion"] = lam * feat["domain_confusion"]
        out["entropy"] = lam * feat["entropy"]
        labeled_heads, labeled_features = det_l, frz_l
    else:
        st_s, _, st_l = split(r["st"])
        out["task_s"] = F.cross_entropy(st_s[:, :k], y)
        out["task_t"] = F.cross_entropy(st_s[:, k:], y)
        if cfg.objective == "confusion":
            d_s, d_t, _ = split(r["disc_det"])
            out["domain"] = losses.domain_classification_loss(d_s, d_t)
            out["domain_confusion"] = cfg.confusion_weight * lam * losses.domain_confusion_loss(
                r["disc_frozen"][:ns + nt])
        elif cfg.objective == "dann":
            d_s, d_t, _ = split(r["disc_grl"])
            out["domain"] = losses.domain_classification_loss(d_s, d_t)
        labeled_heads, labeled_features = st_l, None
    if batch.labeled_target_labels is not None:
        yl = batch.labeled_target_labels
        out["target_task"] = F.cross_entropy(labeled_heads[:, k:], yl)
        soft_input = labeled_features if labeled_features is not None else labeled_heads
        if labeled_features is not None:  # SymNet: the features learn the labelled target classes too
            out["target_task"] = out["target_task"] + F.cross_entropy(labeled_features[:, k:], yl)
        if soft_labels is not None:
            out["soft_label"] = cfg.soft_weight * losses.soft_label_loss(
                soft_input[:, k:], yl, soft_labels, cfg.soft_temperature)
    return out


def target_class_probs(r: dict, objective: str, ns: int, nt: int, k: int) -> torch.Tensor:
    """A model's detached class probabilities on the target batch, from Cs/Ct (what SEED ensembles)."""
    st = (r["st_frozen"] if objective == "symnet" else r["st"])[ns:ns + nt].detach()
    if objective == "symnet":
        p = torch.softmax(st, dim=1)
        return p[:, :k] + p[:, k:]
    return 0.5 * (torch.softmax(st[:, :k], dim=1) + torch.softmax(st[:, k:], dim=1))


# ----------------------------------------------------------------------------------------- the trainer


class NonFiniteLoss(SlimdaError):
    pass


class Trainer:
    """Runs (or resumes) one training run into ``run_dir``."""

    def __init__(self, cfg: TrainConfig, run_dir: str | os.PathLike, progress: bool = True) -> None:
        cfg.validate()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            use_deterministic_cuda()
        self._load_data()
        torch.manual_seed(cfg.seed)
        self.bank = ModelBank(cfg.arch, len(self.class_names), self.prep.channels, parse_ratios(cfg.widths))
        self.model = ModelBatch(self.bank, cfg.objective).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        k = len(self.class_names)
        self.soft_labels = torch.full((k, k), 1.0 / k, device=self.device)
        self.step = 0

    # -- data
    def _load_data(self) -> None:
        from slimda.data import domains as data

        cfg = self.cfg
        source, target = data.load_domain(cfg.source), data.load_domain(cfg.target)
        data.check_class_sets(source, target)
        if len(target) == 0:
            raise SlimdaError(f"target domain {target.name} has no images")
        size = cfg.resolution
        if size is None and cfg.arch != "digits-cnn":
            from slimda.backbones import create_backbone

            size = create_backbone(cfg.arch).default_input_size
        self.prep = data.harmonise(source, target, size)
        self.class_names = list(source.class_names)
        self.source_ds = source.dataset(self.prep)
        self.target_ds = target.dataset(self.prep)
        self.target_labels = target.labels()
        self.labeled_ds = None
        if cfg.target_labeled:
            indices = data.labeled_subset(target, cfg.target_labeled, cfg.seed)
            self.labeled_ds = target.dataset(self.prep, indices)
        self.source_name, self.target_name = source.name, target.name

    def _stack(self, dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = [dataset[int(i)] for i in indices]
        images = torch.stack([img for img, _ in items]).to(self.device)
        labels = torch.tensor([label for _, label in items], dtype=torch.long, device=self.device)
        return images, labels

    def batch(self, step: int) -> Batch:
        cfg, b = self.cfg, self.cfg.batch_size
        xs, ys = self._stack(self.source_ds, step_indices(len(self.source_ds), b, cfg.seed, step, 0, self.rank))
        xt, _ = self._stack(self.target_ds, step_indices(len(self.target_ds), b, cfg.seed, step, 1, self.rank))
        batch = Batch(xs, ys, xt)
        if self.labeled_ds is not None:
            n = min(b, len(self.labeled_ds))
            xl, yl = self._stack(self.labeled_ds, step_indices(len(self.labeled_ds), n, cfg.seed, step, 2, self.rank))
            batch.labeled_target, batch.labeled_target_labels = xl, yl
        return batch

    # -- one step
    def train_step(self, step: int, model: nn.Module | None = None) -> dict[str, float]:
        cfg, k = self.cfg, len(self.class_names)
        model = model or self.model
        progress = step / cfg.iters
        lam = losses.adaptation_weight(progress)
        lr = lr_at(cfg, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.batch(step)
        target = batch.target if batch.labeled_target is None else torch.cat([batch.target, batch.labeled_target])
        configs = sandwich_configs(self.bank, step, cfg.seed, cfg.model_batch)
        self.model.train()
        results = model([batch.source, target], configs, lam)
        ns, nt = batch.source.shape[0], batch.target.shape[0]
        use_soft = self.labeled_ds is not None
        components: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for r in results:
            parts_m = model_losses(r, batch, cfg, k, lam, self.soft_labels if use_soft else None)
            for name, value in parts_m.items():
                components[name] = components.get(name, 0.0) + value.detach() / len(results)
                total = total + value
        if cfg.seed_ensemble:
            probs = [target_class_probs(r, cfg.objective, ns, nt, k) for r in results]
            ensemble = losses.seed_ensemble(probs, cfg.seed_confidence, cfg.seed_temperature)
            seed_loss = sum(losses.distillation_loss(r["a"][ns:ns + nt], ensemble) for r in results)
            seed_term = cfg.seed_weight * lam * seed_loss
            components["seed"] = seed_term.detach() / len(results)
        else:  # Ca still becomes a usable head, from source labels, without touching the backbone
            seed_term = sum(F.cross_entropy(r["a_det"][:ns], batch.labels) for r in results)
            components["ca_source"] = seed_term.detach() / len(results)
        total = total + seed_term
        self._check_finite(step, total, components)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if use_soft:
            self._update_soft_labels(results[0], batch, k)
        with torch.no_grad():
            source_ce = F.cross_entropy(results[0]["st_det"][:ns, :k], batch.labels)
        log = {name: float(v) for name, v in components.items()}
        log.update(total=float(total.detach()) / len(results), source_ce_largest=float(source_ce),
                   **{"lambda": lam, "lr": lr})
        return log

    def _check_finite(self, step: int, total: torch.Tensor, components: Mapping[str, torch.Tensor]) -> None:
        bad = torch.tensor(0.0 if torch.isfinite(total) else 1.0, device=self.device)
        if self.distributed:
            dist.all_reduce(bad)
        if bad.item() > 0:
            named = ", ".join(f"{n}={float(v):.4g}" for n, v in components.items())
            where = f"; the last good checkpoint stays at {self.run_dir / 'checkpoint.pt'}" \
                if (self.run_dir / "checkpoint.pt").exists() else ""
            raise NonFiniteLoss(f"the loss became non-finite at step {step} ({named}); try a lower --lr{where}")

    def _check_ranks_agree(self) -> None:
        """All ranks must end with bit-identical weights; a mismatch would make bank.pt rank 0's alone."""
        import hashlib

        # BatchNorm statistics follow each rank's own last batch (DDP re-broadcasts them at every forward):
        # take rank 0's, as DDP would at the next step.
        for buffer in self.model.buffers():
            dist.broadcast(buffer, src=0)
        digest = hashlib.sha256()
        for value in self.model.state_dict().values():
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        mine = torch.tensor([int.from_bytes(digest.digest()[:7], "big")], dtype=torch.long)
        everyone = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(everyone, mine)
        if any(int(d) != int(mine) for d in everyone):
            raise SlimdaError("the ranks of this distributed run ended with different weights")
        if self.rank == 0:
            print(f"weights identical on {self.world} ranks", file=sys.stderr)

    def _update_soft_labels(self, r: dict, batch: Batch, k: int) -> None:
        """Tzeng's soft labels: running per-class mean of the largest model's source softmax at τ."""
        ns = batch.source.shape[0]
        logits = (r["st_frozen"] if self.cfg.objective == "symnet" else r["st"])[:ns, :k]
        sums, counts = losses.class_means_of_softmax(logits, batch.labels, k, self.cfg.soft_temperature)
        if self.distributed:  # one set of soft labels from every rank's images
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        seen = counts > 0
        means = sums[seen] / counts[seen].unsqueeze(1)
        self.soft_labels[seen] = 0.9 * self.soft_labels[seen] + 0.1 * means

    # -- checkpoints
    def checkpoint_state(self) -> dict:
        return {
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "soft_labels": self.soft_labels.cpu(),
            "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self) -> None:
        if self.rank == 0:
            atomic_torch_save(self.checkpoint_state(), self.run_dir / "checkpoint.pt")

    def load_checkpoint(self) -> None:
        path = self.run_dir / "checkpoint.pt"
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise SlimdaError(f"cannot resume from {path}: {err}") from None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.soft_labels = state["soft_labels"].to(self.device)
        self.step = int(state["step"])

    # -- the run
    def prepare_run_dir(self, resume: bool, force: bool) -> None:
        existing = [name for name in RUN_FILES if (self.run_dir / name).exists()]
        if resume:
            if not (self.run_dir / "checkpoint.pt").exists():
                raise SlimdaError(f"nothing to resume in {self.run_dir}: it has no checkpoint.pt")
            return
        if existing and not force:
            raise SlimdaError(
                f"{self.run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                "--force to overwrite it, or choose another --out"
            )
        if self.distributed:
            dist.barrier()  # every rank has looked before rank 0 writes
        if self.rank == 0:
            if existing and force:
                for name in RUN_FILES:
                    (self.run_dir / name).unlink(missing_ok=True)
                shutil.rmtree(self.run_dir / "latency", ignore_errors=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "config.json", self.resolved_config())
        if self.distributed:
            dist.barrier()

    def resolved_config(self) -> dict:
        return {**self.cfg.to_dict(), "device_used": str(self.device), "world_size": self.world,
                "source_resolved": self.source_name, "target_resolved": self.target_name,
                "class_names": self.class_names, "preprocessing": self.prep.to_dict(),
                "width_space": self.bank.space.to_dict()}

    def fit(self, resume: bool = False, force: bool = False) -> dict:
        """Train until ``cfg.iters`` steps, checkpointing; write bank.pt and eval.csv. Returns a summary."""
        from tqdm import tqdm

        self.prepare_run_dir(resume, force)
        if resume:
            self.load_checkpoint()
        log_path = self.run_dir / "train_log.csv"
        if self.rank == 0:
            truncate_log(log_path, self.step)
        model: nn.Module = self.model
        if self.distributed:
            model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        started = time.perf_counter()
        bar = tqdm(total=self.cfg.iters, initial=self.step, desc="train", unit="step",
                   disable=(not self.progress) or self.rank != 0 or None, dynamic_ncols=True)
        rows = []
        try:
            while self.step < self.cfg.iters:
                log = self.train_step(self.step, model)
                self.step += 1
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.iters:
                    rows.append({"step": self.step, **{k: round(v, 6) for k, v in log.items()}})
                    bar.set_postfix(src=f"{log['source_ce_largest']:.3f}", tot=f"{log['total']:.3f}")
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.iters:
                    if self.rank == 0:
                        append_log(log_path, rows)
                    rows = []
                    self.save_checkpoint()
                bar.update(1)
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        summary = {"steps": self.step, "train_seconds": round(seconds, 2)}
        if self.distributed:
            self._check_ranks_agree()
        if self.rank == 0:
            save_bank(self.bank, self.run_dir / "bank.pt", class_names=self.class_names,
                      preprocessing=self.prep.to_dict(), objective=self.cfg.objective,
                      seed_ensemble=self.cfg.seed_ensemble, test_head=self.cfg.test_head,
                      source=self.source_name, target=self.target_name)
        return summary

    def evaluate(self) -> list[dict]:
        """eval.csv: uniform widths, smallest and largest × every head, BN recalibrated on target."""
        from slimda.select.evaluate import evaluate_configs, image_batches, standard_configs
        self.bank.eval()
        n_cal = min(self.cfg.eval_calibration_images, len(self.target_ds))
        cal_order = torch.randperm(len(self.target_ds), generator=torch.Generator().manual_seed(self.cfg.seed))
        calibration = [x for x, _ in image_batches(self.target_ds, 256, cal_order[:n_cal].tolist(), self.device)]
        images, labels = [], []
        for x, y in image_batches(self.target_ds, 512, device=self.device):
            images.append(x)
            labels.append(y)
        label_tensor = torch.cat(labels).to(self.device) if self.target_labels is not None else None
        h, w = self.prep.size
        rows = evaluate_configs(self.bank, standard_configs(self.bank), calibration, images, label_tensor,
                                distance=self.cfg.eval_distance, input_shape=(1, self.prep.channels, h, w))
        for row in rows:
            row["test_head"] = row["head"] == self.cfg.test_head
        write_csv_atomic(self.run_dir / "eval.csv", rows)
        return rows


# --------------------------------------------------------------------------------------------- files


def append_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (a resumed run re-logs the steps after its checkpoint)."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if int(r["step"]) <= step]
    if kept:
        write_csv_atomic(path, kept)
    else:
        path.unlink()


def use_deterministic_cuda() -> None:
    """Make CUDA training reproducible, which an exact ``--resume`` needs.

    cuDNN picks convolution algorithms by timing them and some backward kernels accumulate with atomics:
    measured on an H100, a resumed 12-step run then differed from the uninterrupted one in the 4th decimal.
    cuBLAS needs a fixed workspace, set before its first call.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """The training device for ``--device`` (auto, cpu, cuda); under torchrun, this rank's GPU."""
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown --device {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but this machine has no usable CUDA GPU")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:
                raise ConfigError(f"torchrun started more processes on this node than it has GPUs ({gpus}): "
                                  f"use --nproc_per_node {gpus}, or --device cpu to train on the CPU")
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device: str = "auto") -> None:
    """Join the process group torchrun describes: NCCL when training on GPUs, gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
