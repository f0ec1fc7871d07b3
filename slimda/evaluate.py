"""Scoring sub-networks of a bank on target images: BN recalibration, accuracy per head, UPEM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset

from slimda.bank import HEADS, BankOutput, ModelBank, head_scores
from slimda.bn import recalibrate
from slimda.cost import count_flops, count_params
from slimda.space import WidthConfig
from slimda.upem import DEFAULT_DISTANCE, upem


def image_batches(dataset: Dataset, batch_size: int, indices: Sequence[int] | None = None,
                  device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches of ``dataset`` in order (labels -1 where the domain has none)."""
    order = list(range(len(dataset))) if indices is None else list(indices)
    for start in range(0, len(order), batch_size):
        items = [dataset[i] for i in order[start:start + batch_size]]
        images = torch.stack([img for img, _ in items]).to(device)
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
        yield images, labels


@contextlib.contextmanager
def preserved_batchnorm(bank: ModelBank) -> Iterator[None]:
    """Restore the bank's BatchNorm statistics and configuration after the block (recalibration edits them)."""
    saved = {name: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for name, m in bank.named_modules() if isinstance(m, _BatchNorm)}
    config, training = bank.config, bank.training
    try:
        yield
    finally:
        for name, m in bank.named_modules():
            if name in saved:
                mean, var, tracked = saved[name]
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
        bank.set_config(config)
        bank.train(training)


@torch.no_grad()
def predict(bank: ModelBank, config: WidthConfig, calibration: Sequence[torch.Tensor],
            images: Sequence[torch.Tensor]) -> BankOutput:
    """Outputs of sub-network ``config`` on ``images`` after recalibrating its BatchNorm on ``calibration``.

    The bank's own statistics and configuration are unchanged afterwards.
    """
    with preserved_batchnorm(bank):
        bank.set_config(config)
        recalibrate(bank, calibration)
        outputs = [bank(x) for x in images]
    return BankOutput(*(torch.cat(parts) for parts in zip(*outputs)))


def head_probabilities(out: BankOutput, head: str, num_classes: int) -> torch.Tensor:
    """Class probabilities ``[N, K]`` of one test-time head."""
    scores = head_scores(out, head, num_classes)
    return scores.exp() if head == "cst" else torch.softmax(scores, dim=1)


def standard_configs(bank: ModelBank) -> list[tuple[str, WidthConfig]]:
    """The configurations every report lists: uniform 0.25/0.5/0.75/1.0, smallest, largest."""
    space = bank.space
    named = [(f"uniform-{r:g}", space.uniform(r)) for r in (0.25, 0.5, 0.75, 1.0)]
    return named + [("smallest", space.smallest()), ("largest", space.largest())]


def evaluate_configs(
    bank: ModelBank,
    configs: Sequence[tuple[str, WidthConfig]],
    calibration: Sequence[torch.Tensor],
    images: Sequence[torch.Tensor],
    labels: torch.Tensor | None,
    heads: Sequence[str] = HEADS,
    distance: str = DEFAULT_DISTANCE,
    input_shape: tuple[int, ...] | None = None,
) -> list[dict]:
    """One row per (configuration, head): target accuracy (when labels exist), UPEM, FLOPs, parameters.

    The UPEM anchor is the largest configuration with the same head, recalibrated the same way.
    """
    anchor = predict(bank, bank.space.largest(), calibration, images)
    rows = []
    for name, config in configs:
        out = anchor if config == bank.space.largest() else predict(bank, config, calibration, images)
        cost = {}
        if input_shape is not None:
            net = bank.extract(config)
            cost = {"flops_m": round(count_flops(net, input_shape) / 1e6, 4),
                    "params_m": round(count_params(net) / 1e6, 5)}
        for head in heads:
            probs = head_probabilities(out, head, bank.num_classes)
            row = {
                "config": name,
                "config_id": config.id,
                "width": round(bank.space.ratio_of(config), 4),
                "head": head,
                "target_acc": "" if labels is None else round(float((probs.argmax(1) == labels).float().mean()), 5),
                "upem": round(upem(probs, head_probabilities(anchor, head, bank.num_classes), distance), 6),
            }
            rows.append({**row, **cost})
    return rows
