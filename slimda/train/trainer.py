"""One SlimDA training run: a whole bank of widths adapted to an unlabelled target domain.

Each step draws a *model batch* (sandwich rule: largest, smallest and random configurations, seeded from
the step so every DDP rank draws the same), runs every model on source + target images, and sums the
intra-model adaptation loss ``L_dc`` (the objective, from ``slimda.train.objectives``) with SEED's
distillation of the model batch's ensemble into the head Ca (OSTC). Batches (``slimda.train.data``) and
configurations are a function of (seed, step, rank), so a resumed run ends with exactly the weights of an
uninterrupted one, whatever the number of loader workers.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from slimda.data.loading import use_threads
from slimda.errors import SlimdaError
from slimda.model.bank import BankMeta, ModelBank, atomic_torch_save, save_bank
from slimda.model.pretrained import InitRecord, load_init
from slimda.model.space import WidthConfig, parse_ratios
from slimda.tables import write_csv_atomic, write_json_atomic
from slimda.train.config import TrainConfig, lr_at, parameter_groups, split_single_group
from slimda.data.domains import indices_digest
from slimda.train.data import TrainingData
from slimda.model.compute import Compute, resolve_amp, resolve_device
from slimda.train.distributed import check_ranks_agree, configure_kernels
from slimda.train.objectives import Objective, create_objective
from slimda.train.objectives.base import Batch, ModelOutputs
from slimda.train.objectives.common import adaptation_weight, class_means_of_softmax
from slimda.train.run_files import RUN_FILES, Throughput, append_log, truncate_log
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
        if cfg.threads:
            use_threads(cfg.threads)
        configure_kernels(self.device, cfg.deterministic)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        # channels-last: the layout tensor cores and cuDNN's fastest convolutions want; on a CPU, no gain
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.preserve_format
        self.data = TrainingData(cfg, self.device, self.rank, self.memory_format)
        self.prep, self.class_names = self.data.prep, self.data.class_names
        self.target_ds, self.target_labels = self.data.target_ds, self.data.target_labels
        torch.manual_seed(cfg.seed)
        self.bank = ModelBank(cfg.arch, len(self.class_names), self.prep.channels, parse_ratios(cfg.widths))
        objective = create_objective(cfg.objective, self.bank.backbone.feature_dim, self.bank.backbone.feature_site,
                                     confusion_weight=cfg.confusion_weight, soft_weight=cfg.soft_weight,
                                     soft_temperature=cfg.soft_temperature)
        self.model = ModelBatch(self.bank, objective).to(self.device, memory_format=self.memory_format)
        # fp16's narrow range needs loss scaling; bf16 and float32 do not (a disabled scaler passes through)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, cfg.lr, cfg.resolved_backbone_lr_mult),
                                         lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.init_record: InitRecord | None = None
        k = len(self.class_names)
        self.soft_labels = torch.full((k, k), 1.0 / k, device=self.device)
        self.step = 0
        self._elapsed_before = self._elapsed_at_checkpoint = 0.0  # training seconds before this process

    def batch(self, step: int) -> Batch:
        """The images of ``step`` on this rank, made in this process."""
        return self.data.batch(step)

    # -- one step
    def train_step(self, step: int, model: nn.Module | None = None, batch: Batch | None = None) -> dict[str, float]:
        """One optimisation step over the model batch of ``step``; returns the logged loss terms.

        Every model's forward runs under autocast when ``--amp`` is on; the losses are computed from its
        outputs cast to float32. ``--backward joint`` backpropagates the summed loss of all models once;
        ``per-model`` backpropagates each model's loss as soon as it is computed (the slimmable-networks
        reference trainer's order), so only one model's activations are alive at a time: SEED's ensemble then
        comes first from a forward of every model on the target images without a graph.
        """
        cfg, k = self.cfg, len(self.class_names)
        model = model or self.model
        progress = step / cfg.iters
        lam = adaptation_weight(progress)
        lr = lr_at(cfg, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        batch = batch if batch is not None else self.batch(step)
        target = batch.target if batch.labeled_target is None else torch.cat([batch.target, batch.labeled_target])
        configs = sandwich_configs(self.bank, step, cfg.seed, cfg.model_batch)
        ns, nt, m = batch.source.shape[0], batch.target.shape[0], len(configs)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # Ca's loss: SEED's distillation (weighted by λ), or without SEED source labels on detached features
        weight = cfg.seed_weight * lam if cfg.seed_ensemble else 1.0
        components: dict[str, torch.Tensor] = {}

        def add(parts: Mapping[str, torch.Tensor], ca_term: torch.Tensor) -> None:
            for name, value in parts.items():
                components[name] = components.get(name, 0.0) + value.detach() / m
            name = "seed" if cfg.seed_ensemble else "ca_source"
            components[name] = components.get(name, 0.0) + weight * ca_term.detach() / m

        if cfg.backward == "joint":
            with self.autocast():
                results = [r.to_float() for r in model([batch.source, target], configs, lam)]
            ensemble = self._ensemble([r.st[ns:ns + nt] for r in results], k) if cfg.seed_ensemble else None
            terms = [self._model_terms(r, batch, k, lam, ensemble) for r in results]
            total = torch.zeros((), device=self.device)
            for parts, ca_term in terms:
                add(parts, ca_term)
                for value in parts.values():
                    total = total + value
            total = total + weight * sum(ca_term for _, ca_term in terms)
            self._check_finite(step, total, components)
            self.scaler.scale(total).backward()
            first = results[0]
        else:
            ensemble = self._ensemble_without_graph(model, target, configs, lam, nt, k) if cfg.seed_ensemble else None
            total = torch.zeros((), device=self.device)
            for i, config in enumerate(configs):
                sync = contextlib.nullcontext() if i == m - 1 or not self.distributed else model.no_sync()
                with sync:
                    with self.autocast():
                        r = model([batch.source, target], [config], lam)[0].to_float()
                    parts, ca_term = self._model_terms(r, batch, k, lam, ensemble)
                    add(parts, ca_term)
                    loss = sum(parts.values()) + weight * ca_term
                    self._check_finite(step, loss, components)
                    self.scaler.scale(loss).backward()
                total = total + loss.detach()
                if i == 0:
                    first = r
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if batch.labeled_target is not None:
            self._update_soft_labels(first, batch, k)
        with torch.no_grad():
            source_ce = F.cross_entropy(first.st_det[:ns, :k], batch.labels)
        log = {name: float(v) for name, v in components.items()}
        log.update(total=float(total.detach()) / m, source_ce_largest=float(source_ce),
                   **{"lambda": lam, "lr": lr})
        return log

    def _model_terms(self, r: ModelOutputs, batch: Batch, k: int, lam: float,
                     ensemble: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One model's ``L_dc`` terms and its Ca term: SEED's distillation from ``ensemble`` on the target
        images, or (no SEED) cross-entropy on source labels from detached features."""
        soft = self.soft_labels if batch.labeled_target is not None else None
        parts = self.model.objective.losses(r, batch, k, lam, soft)
        ns, nt = batch.source.shape[0], batch.target.shape[0]
        if ensemble is not None:
            return parts, distillation_loss(r.a[ns:ns + nt], ensemble)
        return parts, F.cross_entropy(r.a_det[:ns], batch.labels)

    def _ensemble(self, target_st: Sequence[torch.Tensor], k: int) -> torch.Tensor:
        """SEED's ensemble of the models' Cs/Ct logits on the target images, in float32."""
        objective: Objective = self.model.objective
        probs = [objective.class_probabilities(st.detach().float(), k) for st in target_st]
        return seed_ensemble(probs, self.cfg.seed_confidence, self.cfg.seed_temperature)

    @torch.no_grad()
    def _ensemble_without_graph(self, model: nn.Module, target: torch.Tensor, configs: Sequence[WidthConfig],
                                lam: float, nt: int, k: int) -> torch.Tensor:
        """SEED's ensemble from a forward of every model on the target images alone, keeping no graph.

        BatchNorm normalises each domain with its own batch statistics, so these logits are those the joint
        step computes; the running statistics this extra forward would move are put back.
        """
        norms = [mod for mod in self.model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
        saved = [(mod.running_mean.clone(), mod.running_var.clone(), mod.num_batches_tracked.clone())
                 for mod in norms]
        try:
            with self.autocast():
                results = model([target], configs, lam)
            return self._ensemble([r.st[:nt] for r in results], k)
        finally:
            for mod, (mean, var, count) in zip(norms, saved):
                mod.running_mean.copy_(mean)
                mod.running_var.copy_(var)
                mod.num_batches_tracked.copy_(count)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward passes (``--amp``); a no-op when it is off."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

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
            "elapsed_s": self._elapsed_at_checkpoint,
            "grad_scaler": self.scaler.state_dict(),
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
        self.optimizer.load_state_dict(split_single_group(state["optimizer"], self.optimizer))
        self.soft_labels = state["soft_labels"].to(self.device)
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self._elapsed_before = self._elapsed_at_checkpoint = float(state.get("elapsed_s", 0.0))

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

    def load_init(self) -> None:
        """Load ``--init`` weights into the bank (a fresh run only: a resumed one has them in its checkpoint)."""
        if self.cfg.init:
            self.init_record = load_init(self.bank, self.cfg.init, self.class_names, self.prep.channels)

    def meta(self) -> BankMeta:
        """What ``bank.pt`` records besides weights."""
        return BankMeta(tuple(self.class_names), self.prep, self.cfg.test_head, self.cfg.objective,
                        self.cfg.seed_ensemble, self.data.source_name, self.data.target_name)

    def resolved_config(self) -> dict:
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype is not None else "off"
        return {**self.cfg.to_dict(), "device_used": str(self.device), "world_size": self.world,
                "preprocess_used": self.data.recipe.kind, "preprocess_reason": self.data.recipe.reason,
                "augment_used": self.data.augment, "amp_used": amp, "workers_used": self.data.workers,
                "threads_used": torch.get_num_threads(),
                "source_resolved": self.data.source_name, "target_resolved": self.data.target_name,
                "source_val_images": len(self.data.source_val),  # held out of training: the estimates' split
                "source_val_sha256": indices_digest(self.data.source_val),
                "class_names": self.class_names, "preprocessing": self.prep.to_dict(),
                "width_space": self.bank.space.to_dict(),
                "param_groups": [{"name": g["name"], "lr": g["lr_mult"] * self.cfg.lr, "lr_mult": g["lr_mult"],
                                  "tensors": len(g["params"])} for g in self.optimizer.param_groups],
                **(self.init_record.to_dict() if self.init_record else {})}

    def fit(self, resume: bool = False, force: bool = False) -> dict:
        """Train until ``cfg.iters`` steps, checkpointing; write bank.pt and eval.csv. Returns a summary."""
        from tqdm import tqdm

        if not resume:
            self.load_init()
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
        lead = self.rank == 0 and self.progress
        bar = tqdm(total=self.cfg.iters, initial=self.step, desc="train", unit="step",
                   disable=(not lead) or not sys.stderr.isatty(), dynamic_ncols=True)
        meter = Throughput(self.step, self._elapsed_before, self.data.images_per_step(self.world))
        try:
            for batch in self.data.loader(self.step):
                log = self.train_step(self.step, model, batch)
                self.step += 1
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.iters:
                    row = {"step": self.step, **{k: round(v, 6) for k, v in log.items()}, **meter.read(self.step)}
                    if self.rank == 0:
                        append_log(log_path, [row])  # as it goes: a killed run keeps its log to that step
                    bar.set_postfix(src=f"{log['source_ce_largest']:.3f}", tot=f"{log['total']:.3f}")
                if lead and bar.disable and (self.step % self.cfg.print_every == 0 or self.step == self.cfg.iters):
                    print(meter.line(self.step, self.cfg.iters, log), file=sys.stderr, flush=True)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.iters:
                    self._elapsed_at_checkpoint = meter.elapsed()
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
        from slimda.data.loading import image_batches
        from slimda.select.evaluate import TargetImages, evaluate_configs, standard_configs
        self.bank.eval()
        n_cal = min(self.cfg.eval_calibration_images, len(self.target_ds))
        cal_order = torch.randperm(len(self.target_ds), generator=torch.Generator().manual_seed(self.cfg.seed))
        calibration = [x for x, _ in image_batches(self.target_ds, 256, cal_order[:n_cal].tolist(), self.device,
                                                   self.data.workers)]
        images, labels = [], []
        for x, y in image_batches(self.target_ds, 512, device=self.device, workers=self.data.workers):
            images.append(x)
            labels.append(y)
        label_tensor = torch.cat(labels).cpu() if self.target_labels is not None else None  # as the outputs are
        source = None
        if self.data.source_val_ds is not None:  # the held-out source split: its accuracy and the estimates
            held = list(image_batches(self.data.source_val_ds, 512, device=self.device, workers=self.data.workers))
            source = TargetImages("source-val", [], [x for x, _ in held], torch.cat([y for _, y in held]).cpu())
        h, w = self.prep.size
        rows = evaluate_configs(self.bank, standard_configs(self.bank), calibration, images, label_tensor,
                                distance=self.cfg.eval_distance, input_shape=(1, self.prep.channels, h, w),
                                compute=Compute(self.device), source=source)  # on the training device, in fp32
        for row in rows:
            row["test_head"] = row["head"] == self.cfg.test_head
        write_csv_atomic(self.run_dir / "eval.csv", rows)
        return rows
