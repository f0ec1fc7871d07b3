"""Everything that determines a training run (``TrainConfig``, written to ``RUN/config.json``) and its
learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from slimda.errors import ConfigError
from slimda.model.heads import HEADS
from slimda.model.space import parse_ratios
from slimda.train.objectives import objective_names
from slimda.train.seed import CONFIDENCES

LR_SCHEDULES: tuple[str, ...] = ("anneal", "cosine", "constant")


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

        choices = {"objective": objective_names(), "seed_confidence": CONFIDENCES, "test_head": HEADS,
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


def lr_at(cfg: TrainConfig, progress: float) -> float:
    if cfg.lr_schedule == "anneal":  # DANN / SymNet schedule
        return cfg.lr / (1.0 + 10.0 * progress) ** 0.75
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr
