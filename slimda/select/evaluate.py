"""Scoring sub-networks of a bank on target images: BN recalibration, accuracy per head, UPEM."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch.utils.data import Dataset

from slimda.data.domains import Domain
from slimda.data.loading import image_batches
from slimda.errors import ConfigError
from slimda.model.bank import BankMeta, ModelBank, StaticBank
from slimda.model.bn import recalibrate
from slimda.model.compute import CPU, Compute
from slimda.model.cost import count_flops, count_params
from slimda.model.heads import HEADS, BankOutput, get_head
from slimda.model.space import WidthConfig
from slimda.select.estimate import Estimate
from slimda.select.upem import DEFAULT_DISTANCE, upem


def calibrated(bank: ModelBank, config: WidthConfig, calibration: Sequence[torch.Tensor],
               compute: Compute = CPU) -> StaticBank:
    """Sub-network ``config`` extracted as plain layers (every head), BatchNorm recalibrated on ``calibration``,
    on ``compute``'s device and in its layout and autocast.

    Extraction comes first: the bank's own statistics and configuration are never touched, and what is
    scored is the network that would be exported.
    """
    static = compute.module(bank.extract_all(config))

    def forward(net: torch.nn.Module, x: torch.Tensor) -> None:
        with compute.autocast():
            net(compute.input(x))

    recalibrate(static, calibration, forward)
    return static.eval()


@torch.no_grad()
def forward_all(static: StaticBank, images: Sequence[torch.Tensor], compute: Compute = CPU) -> BankOutput:
    """``static``'s outputs on every batch of ``images``, computed on ``compute``, as float32 CPU tensors."""
    outputs = []
    for x in images:
        with compute.autocast():
            out = static(compute.input(x))
        outputs.append([part.float().cpu() for part in out])
    return BankOutput(*(torch.cat(parts) for parts in zip(*outputs)))


def predict(bank: ModelBank, config: WidthConfig, calibration: Sequence[torch.Tensor],
            images: Sequence[torch.Tensor], compute: Compute = CPU) -> BankOutput:
    """Outputs of sub-network ``config`` on ``images`` after recalibrating its BatchNorm on ``calibration``."""
    return forward_all(calibrated(bank, config, calibration, compute), images, compute)


def head_probabilities(out: BankOutput, head: str, num_classes: int) -> torch.Tensor:
    """Class probabilities ``[N, K]`` of one test-time head."""
    h = get_head(head)
    return h.probabilities(h.scores(out, num_classes))


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
    compute: Compute = CPU,
    source: TargetImages | None = None,
) -> list[dict]:
    """One row per (configuration, head): target accuracy (when labels exist), UPEM, FLOPs, parameters, and
    with ``source`` (a labelled source split training never saw) the label-free accuracy estimates of
    ``slimda.select.estimate`` and the source split's accuracy.

    The UPEM anchor is the largest configuration with the same head, recalibrated the same way. Scored on
    ``compute``, with the images kept on its device between configurations when they fit.
    """
    calibration, images = compute.stage(calibration), compute.stage(images)
    anchor = predict(bank, bank.space.largest(), calibration, images, compute)
    rows = []
    for name, config in configs:
        largest = config == bank.space.largest()
        # as it ships: BatchNorm of the target (the anchor's outputs already are the largest one's)
        static = calibrated(bank, config, calibration, compute) if source is not None or not largest else None
        out = anchor if largest else forward_all(static, images, compute)
        source_out = forward_all(static, source.images, compute) if source is not None else None
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
            if source_out is not None:
                row.update(estimates(head_probabilities(source_out, head, bank.num_classes), source.labels, probs))
            rows.append({**row, **cost})
    return rows


def estimates(source: torch.Tensor, source_labels: torch.Tensor, target: torch.Tensor,
              anchor_source: torch.Tensor | None = None,
              anchor_target: torch.Tensor | None = None) -> dict[str, object]:
    """A network's label-free target-accuracy estimate (``slimda.select.estimate.target_accuracy``) with its
    interval and verdict, from its softmax on the source split and the target, beside the source split's accuracy
    and the simpler estimates it is compared with (columns of ``slimda eval`` and eval.csv)."""
    from slimda.select import estimate as est

    found = est.target_accuracy(source, source_labels, target, anchor_source, anchor_target)
    return {"source_val_acc": round(est.accuracy(source, source_labels), 5), **found.columns(),
            "est_acc_doc": round(est.doc(source, source_labels, target), 5),
            "avg_conf": round(est.average_confidence(target), 5), "temperature": round(found.temperature, 4)}


# ------------------------------------------------------------------------------- target images and scoring


@dataclass
class TargetImages:
    """Target images prepared for a bank: BN calibration batches, scoring batches, labels if any.

    ``dataset`` is the whole target read with the bank's preprocessing and ``scored`` the indices of the
    scored images in it, so that int8 calibration can draw images that never score (``split_calibration``).
    """

    name: str
    calibration: list[torch.Tensor]
    images: list[torch.Tensor]
    labels: torch.Tensor | None
    dataset: Dataset | None = None
    scored: tuple[int, ...] = ()
    domain: Domain | None = None  # where the images came from (their originals, for a person to label)

    @property
    def count(self) -> int:
        return sum(len(x) for x in self.images)


def load_target_images(spec: str, meta: BankMeta, calibration_images: int = 1024, score_images: int = 0,
                       batch_size: int = 256, seed: int = 0, workers: int | None = None) -> TargetImages:
    """The target domain ``spec`` (built-in name or folder) preprocessed as the bank was trained.

    ``calibration_images`` random images recalibrate BatchNorm; ``score_images`` random images (0: all)
    are scored, both read by ``workers`` loader processes (None: from the core count). A missing or empty
    target, or one with classes the bank does not know, is a ``DataError``.
    """
    from slimda.data.domains import load_domain
    from slimda.data.loading import default_workers
    from slimda.errors import ConfigError, DataError

    if calibration_images < 1:
        raise ConfigError(f"--calibration-images must be at least 1, got {calibration_images}")
    if score_images < 0:
        raise ConfigError(f"--score-images must be 0 (all) or more, got {score_images}")
    prep = meta.preprocessing
    target = load_domain(spec)
    if len(target) == 0:
        raise DataError(f"target {target.name} has no images: point --target at a folder of target images")
    class_names = list(meta.class_names)
    if target.has_labels and list(target.class_names) != class_names:
        unknown = sorted(set(target.class_names) - set(class_names))
        raise DataError(f"target {target.name} has classes the bank does not know: {unknown or target.class_names}; "
                        f"the bank's classes are {class_names}")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be 0 (load in this process) or more, got {workers}")
    workers = default_workers(torch.get_num_threads(), target.in_memory) if workers is None else workers
    dataset = target.dataset(prep)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    calibration = [x for x, _ in image_batches(dataset, batch_size, order[:calibration_images], workers=workers,
                                               progress="calibration images")]
    scored = sorted(order[:score_images]) if 0 < score_images < len(dataset) else list(range(len(dataset)))
    images, labels = [], []
    for x, y in image_batches(dataset, batch_size, scored, workers=workers, progress="target images"):
        images.append(x)
        labels.append(y)
    return TargetImages(target.name, calibration, images, torch.cat(labels) if target.has_labels else None,
                        dataset, tuple(scored), target)


def load_source_val(spec: str, meta: BankMeta, images: int = 2000, seed: int = 0,
                    workers: int | None = None) -> TargetImages:
    """Labelled images of the source domain that training never saw (``--source-val DATA``), read as the bank's
    input: ``images`` of them at random (0: all). A folder without class folders is a ``DataError``."""
    from slimda.errors import DataError

    try:
        split = load_target_images(spec, meta, calibration_images=1, score_images=images, seed=seed, workers=workers)
    except DataError as err:  # it said "target": name the option it came through
        raise DataError(f"--source-val {spec}: {err}") from None
    if split.labels is None:
        raise DataError(f"--source-val {spec} has no labels: give a folder of the source domain with one folder "
                        "per class, none of whose images the bank was trained on")
    return split


def load_run_source_val(run_dir: str | os.PathLike, meta: BankMeta, images: int = 2000, seed: int = 0,
                        workers: int | None = None) -> TargetImages | None:
    """The source images a run held out of training (``slimda-train --source-val``), found again from its
    config.json and read as the bank's input (``images`` of them at random; 0: all); None when the run trained
    on every source image. A source domain that changed since training is a ``DataError``."""
    import json
    from pathlib import Path

    from slimda.data.domains import indices_digest, load_domain, source_val_split
    from slimda.data.loading import default_workers
    from slimda.errors import DataError

    config = Path(run_dir) / "config.json"
    saved = json.loads(config.read_text()) if config.is_file() else {}
    if not saved.get("source_val_images"):
        return None
    domain = load_domain(str(saved["source_resolved"]))
    _, held = source_val_split(len(domain), float(saved["source_val"]), int(saved["seed"]))
    if indices_digest(held) != saved.get("source_val_sha256"):
        raise DataError(f"the source domain {domain.name} has changed since {run_dir} was trained, so its held-out "
                        "split cannot be found again: pass --source-val DATA (labelled source images the bank "
                        "never trained on)")
    dataset = domain.dataset(meta.preprocessing, held)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = sorted(order[:images]) if 0 < images < len(dataset) else list(range(len(dataset)))
    workers = default_workers(torch.get_num_threads(), domain.in_memory) if workers is None else workers
    batches = list(image_batches(dataset, 256, chosen, workers=workers, progress="source split"))
    return TargetImages(f"{domain.name} (held out)", [], [x for x, _ in batches], torch.cat([y for _, y in batches]))


SELECT_BY = ("upem", "upem-ensemble", "estimate")
# the best Spearman ρ of the three on both banks whose widths spread ≥ 3 points (benchmarks/accuracy_estimation.py)
DEFAULT_SELECT_BY = "upem"


@dataclass(frozen=True)
class Score:
    """A configuration's UPEM and target accuracy in one precision."""

    upem: float
    target_acc: float | None  # None when the target has no labels; never used to choose
    estimate: Estimate | None = None  # the label-free estimate of target_acc, where one was asked for and possible


class TargetScorer:
    """UPEM of sub-networks on target images for one head (and accuracy, when labels exist), cached per
    configuration, so a fleet of deployments and the reports share every evaluation. With ``source`` (a
    labelled source split training never saw), also each network's estimated target accuracy (``estimate``)."""

    def __init__(self, bank: ModelBank, target: TargetImages, head: str = "ca",
                 distance: str = DEFAULT_DISTANCE, compute: Compute = CPU, source: TargetImages | None = None,
                 select_by: str = DEFAULT_SELECT_BY) -> None:
        get_head(head)  # an unknown head is a ConfigError listing the heads
        if select_by not in SELECT_BY:
            raise ConfigError(f"unknown --select-by {select_by!r}; choose one of {', '.join(SELECT_BY)}")
        self.select_by = select_by
        self.bank, self.target, self.head, self.distance, self.compute = bank, target, head, distance, compute
        self.cache: dict[str, Score] = {}
        self._anchor: torch.Tensor | None = None
        self._largest: torch.Tensor | None = None
        # on a GPU the images stay there between candidates when they fit (``Compute.stage``)
        self._calibration, self._images = compute.stage(target.calibration), compute.stage(target.images)
        self.source = source
        self.no_estimate = estimation_refusal(target, source)  # why there is no estimate; None: there is one
        self._source_images = compute.stage(source.images) if source is not None and not self.no_estimate else []
        self._estimates: dict[str, Estimate] = {}
        self._anchor_source: torch.Tensor | None = None
        if select_by == "estimate" and self.no_estimate:
            raise ConfigError(f"--select-by estimate needs an estimate of target accuracy, and there is none: "
                              f"{self.no_estimate}")

    @property
    def images_on_device(self) -> bool:
        """Whether the target images stay on the scoring device between candidates."""
        return all(x.device.type == self.compute.device.type for x in (*self._calibration, *self._images))

    def calibrated(self, config: WidthConfig) -> StaticBank:
        """``config``'s network as it is exported: BatchNorm recalibrated on the target in fp32 (on the scoring
        device; scoring itself may run under autocast), on the CPU."""
        return calibrated(self.bank, config, self._calibration, self.compute.exact()).cpu()

    def _probabilities(self, config: WidthConfig) -> torch.Tensor:
        out = predict(self.bank, config, self._calibration, self._images, self.compute)
        return head_probabilities(out, self.head, self.bank.num_classes)

    @property
    def anchor(self) -> torch.Tensor:
        """What UPEM measures the distance to: the largest network, or with ``--select-by upem-ensemble`` the
        mean prediction of the uniform widths."""
        if self._anchor is None:
            space = self.bank.space
            members = [space.uniform(r) for r in space.ratios] if self.select_by == "upem-ensemble" else []
            self._anchor = torch.stack([self.largest, *(self._probabilities(c) for c in members
                                                        if c != space.largest())]).mean(0)
        return self._anchor

    @property
    def largest(self) -> torch.Tensor:
        """The largest network's class probabilities on the scored images."""
        if self._largest is None:
            self._largest = self._probabilities(self.bank.space.largest())
        return self._largest

    def fitness(self, config: WidthConfig) -> float:
        """What the search minimises: UPEM, or the estimated target accuracy's negative (``--select-by``)."""
        return self.fitness_from(self.score(config).upem, self.estimate(config) if self.select_by == "estimate"
                                 else None)

    def fitness_from(self, upem_value: float, estimate: Estimate | None) -> float:
        return -estimate.estimate if self.select_by == "estimate" and estimate is not None else upem_value

    def score(self, config: WidthConfig) -> Score:
        if config.id not in self.cache:
            probs = self.largest if config == self.bank.space.largest() else self._probabilities(config)
            self._remember(config, probs)
        return self.cache[config.id]

    def _remember(self, config: WidthConfig, probs: torch.Tensor) -> None:
        labels = self.target.labels
        acc = None if labels is None else float((probs.argmax(1) == labels).float().mean())
        self.cache[config.id] = Score(upem(probs, self.anchor, self.distance), acc)

    def score_with_estimate(self, config: WidthConfig) -> Score:
        """``score`` with the estimate filled in (where there can be one)."""
        estimate = self.estimate(config)
        return replace(self.score(config), estimate=estimate)

    def upem(self, config: WidthConfig) -> float:
        return self.score(config).upem

    def _source_probabilities(self, static: StaticBank) -> torch.Tensor:
        return head_probabilities(forward_all(static, self._source_images, self.compute), self.head,
                                  self.bank.num_classes)

    def estimate(self, config: WidthConfig) -> Estimate | None:
        """``config``'s estimated target accuracy as it ships, with its interval and verdict (cached); None
        without a usable source split (``no_estimate`` says why)."""
        if self.no_estimate:
            return None
        if config.id not in self._estimates:
            static = calibrated(self.bank, config, self._calibration, self.compute)
            target = head_probabilities(forward_all(static, self._images, self.compute), self.head,
                                        self.bank.num_classes)
            if config.id not in self.cache:  # scored on the way (a report asks for both)
                self._remember(config, target)
            self._estimates[config.id] = self.estimate_from(self._source_probabilities(static), target)
        return self._estimates[config.id]

    def estimate_from(self, source: torch.Tensor, target: torch.Tensor) -> Estimate:
        """The estimate of a network whose softmax on the source split and the scored target images is given
        (an int8 model's, say), beside the largest network's."""
        from slimda.select.estimate import target_accuracy

        if self._anchor_source is None:
            largest = calibrated(self.bank, self.bank.space.largest(), self._calibration, self.compute)
            self._anchor_source = self._source_probabilities(largest)
        return target_accuracy(source, self.source.labels, target, self._anchor_source, self.largest)


def estimation_refusal(target: TargetImages, source: TargetImages | None) -> str | None:
    """Why target accuracy cannot be estimated from these images (None: it can)."""
    from slimda.select.estimate import MIN_SOURCE_IMAGES, MIN_TARGET_IMAGES

    if source is None:
        return ("no labelled source images the bank never trained on: train with slimda-train --source-val 0.1, or "
                "pass --source-val DATA (a folder of labelled source images, one folder per class)")
    if source.count < MIN_SOURCE_IMAGES:
        return (f"the source split has {source.count} images; an estimate needs at least {MIN_SOURCE_IMAGES} "
                "(a larger slimda-train --source-val share, or --source-val DATA with more images)")
    if target.count < MIN_TARGET_IMAGES:
        return (f"{target.count} target images are scored; an estimate needs at least {MIN_TARGET_IMAGES} "
                "(more target images, or a larger --score-images)")
    return None
