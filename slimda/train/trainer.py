"""One SlimDA training run: a whole bank of widths adapted to an unlabelled target domain.

Each step draws a *model batch* (sandwich rule: largest, smallest and random configurations, seeded from
the step so every DDP rank draws the same), runs every model on source + target images, and sums the
intra-model adaptation loss ``L_dc`` (the objective, from ``slimda.train.objectives``) with SEED's
distillation of the model batch's ensemble into the head Ca (OSTC). Batches and configurations are a
function of (seed, step, rank), so a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from slimda.errors import SlimdaError
from slimda.model.bank import BankMeta, ModelBank, atomic_torch_save, save_bank
from slimda.model.space import WidthConfig, parse_ratios
from slimda.tables import write_csv_atomic, write_json_atomic
from slimda.train.config import TrainConfig, lr_at
from slimda.train.distributed import check_ranks_agree, resolve_device, use_deterministic_cuda
from slimda.train.objectives import Objective, create_objective
from slimda.train.objectives.base import Batch, ModelOutputs
from slimda.train.objectives.common import adaptation_weight, class_means_of_softmax
from slimda.train.run_files import RUN_FILES, append_log, truncate_log
from slimda.train.seed import distillation_loss, seed_ensemble

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


# ------------------------------------------------------------------------------------------ the model


class ModelBatch(nn.Module):
    """The bank and its objective (which owns any domain discriminator); ``forward`` runs every model of a
    model batch.

    All head outputs a loss needs are computed inside ``forward`` while that model's widths are active
    (the heads are slimmable too), and inside one ``forward`` call so that DistributedDataParallel sees
    one forward per backward.
    """

    def __init__(self, bank: ModelBank, objective: Objective) -> None:
        super().__init__()
        self.bank = bank
        self.objective = objective

    def forward(self, domains: Sequence[torch.Tensor], configs: Sequence[WidthConfig],
                grl_coeff: float) -> list[ModelOutputs]:
        """``domains``: one image batch per domain (source; target with any labelled target images).

        Each domain goes through the backbone on its own, so BatchNorm normalises it with its own batch
        statistics, as SymNet's reference code does; evaluation recalibrates on target images to match.
        Returns per model the head outputs over all images concatenated in ``domains`` order.
        """
        results = []
        head_st, head_a = self.bank.head_st, self.bank.head_a
        for config in configs:
            self.bank.set_config(config)
            self.objective.activate(config.as_dict())
            f = torch.cat([self.bank.backbone(x) for x in domains])
            st_det, a, a_det = head_st(f.detach()), head_a(f), head_a(f.detach())
            results.append(ModelOutputs(st_det, a, a_det, self.objective.feature_path(head_st, f, grl_coeff)))
        self.bank.set_config(self.bank.space.largest())
        return results


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
        objective = create_objective(cfg.objective, self.bank.backbone.feature_dim, self.bank.backbone.feature_site,
                                     confusion_weight=cfg.confusion_weight, soft_weight=cfg.soft_weight,
                                     soft_temperature=cfg.soft_temperature)
        self.model = ModelBatch(self.bank, objective).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        k = len(self.class_names)
        self.soft_labels = torch.full((k, k), 1.0 / k, device=self.device)
        self.step = 0

    # -- data
    def _load_data(self) -> None:
        from slimda.backbones import backbone_cfg
        from slimda.data import domains as data

        cfg = self.cfg
        source, target = data.load_domain(cfg.source), data.load_domain(cfg.target)
        data.check_class_sets(source, target)
        if len(target) == 0:
            raise SlimdaError(f"target domain {target.name} has no images")
        arch = backbone_cfg(cfg.arch)
        size = cfg.resolution if cfg.resolution is not None or arch.data_sized else arch.input_size
        self.prep = data.harmonise(source, target, size, arch)
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
        lam = adaptation_weight(progress)
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
        objective: Objective = self.model.objective
        for r in results:
            parts_m = objective.losses(r, batch, k, lam, self.soft_labels if use_soft else None)
            for name, value in parts_m.items():
                components[name] = components.get(name, 0.0) + value.detach() / len(results)
                total = total + value
        if cfg.seed_ensemble:
            probs = [objective.class_probabilities(r.st[ns:ns + nt].detach(), k) for r in results]
            ensemble = seed_ensemble(probs, cfg.seed_confidence, cfg.seed_temperature)
            seed_loss = sum(distillation_loss(r.a[ns:ns + nt], ensemble) for r in results)
            seed_term = cfg.seed_weight * lam * seed_loss
            components["seed"] = seed_term.detach() / len(results)
        else:  # Ca still becomes a usable head, from source labels, without touching the backbone
            seed_term = sum(F.cross_entropy(r.a_det[:ns], batch.labels) for r in results)
            components["ca_source"] = seed_term.detach() / len(results)
        total = total + seed_term
        self._check_finite(step, total, components)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if use_soft:
            self._update_soft_labels(results[0], batch, k)
        with torch.no_grad():
            source_ce = F.cross_entropy(results[0].st_det[:ns, :k], batch.labels)
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

    def _update_soft_labels(self, r: ModelOutputs, batch: Batch, k: int) -> None:
        """Tzeng's soft labels: running per-class mean of the largest model's source softmax at τ."""
        logits = r.st[: batch.source.shape[0], :k]
        sums, counts = class_means_of_softmax(logits, batch.labels, k, self.cfg.soft_temperature)
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
        # checkpoints from before objectives were modules kept the discriminator at the top level
        model_state = {("objective." + k if k.startswith("discriminator.") else k): v
                       for k, v in state["model"].items()}
        self.model.load_state_dict(model_state)
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

    def meta(self) -> BankMeta:
        """What ``bank.pt`` records besides weights."""
        return BankMeta(tuple(self.class_names), self.prep, self.cfg.test_head, self.cfg.objective,
                        self.cfg.seed_ensemble, self.source_name, self.target_name)

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
            check_ranks_agree(self.model, self.rank, self.world)
        if self.rank == 0:
            save_bank(self.bank, self.run_dir / "bank.pt", self.meta())
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
