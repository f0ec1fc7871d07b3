"""A training run's images: the source/target pair harmonised to one preprocessing, the augmented training
streams, and every step's batch as a pure function of (seed, step, stream, rank), made by the loader's workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from slimda.data.loading import Key, StepKeys, StreamDataset, collate_streams, default_workers, loader_of
from slimda.data.preprocessing import resolve_augment
from slimda.errors import SlimdaError
from slimda.train.config import TrainConfig
from slimda.train.objectives.base import Batch


def step_draw(size: int, batch: int, seed: int, step: int, stream: int, rank: int = 0) -> list[Key]:
    """Keys ``(stream, index, augmentation seed)`` of one batch drawn with replacement, a pure function of
    (seed, step, stream, rank): the loader makes the same batch in any process, in any run."""
    gen = torch.Generator().manual_seed(((seed * 7919 + stream) * 104_729 + rank) * 1_000_003 + step)
    indices = torch.randint(0, size, (batch,), generator=gen)
    seeds = torch.randint(0, 2**62, (batch,), generator=gen)
    return [(stream, int(i), int(s)) for i, s in zip(indices, seeds)]


class TrainingData:
    """The domains of ``cfg`` loaded and preprocessed for training on ``device`` as ``rank``.

    ``streams``: the augmented training datasets (source without its held-out split, target, and labelled
    target images when semi-supervised); ``target_ds``: the target as scoring sees it (not augmented);
    ``source_val_ds``: the held-out source split (``--source-val``), never trained on, or None.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, rank: int = 0,
                 memory_format: torch.memory_format = torch.preserve_format) -> None:
        from slimda.backbones import backbone_cfg
        from slimda.data import domains as data

        self.cfg, self.device, self.rank, self.memory_format = cfg, device, rank, memory_format
        source, target = data.load_domain(cfg.source), data.load_domain(cfg.target)
        data.check_class_sets(source, target)
        if len(target) == 0:
            raise SlimdaError(f"target domain {target.name} has no images")
        arch = backbone_cfg(cfg.arch)
        size = cfg.resolution if cfg.resolution is not None or arch.data_sized else arch.input_size
        self.recipe = data.recipe_for(source, target, cfg.preprocess, init=bool(cfg.init))
        self.prep = data.harmonise(source, target, size, arch, self.recipe)
        self.augment = resolve_augment(cfg.augment, self.prep)
        in_memory = source.in_memory and target.in_memory
        self.workers = (cfg.workers if cfg.workers is not None else
                        default_workers(torch.get_num_threads(), in_memory, cuda=device.type == "cuda"))
        if cfg.cache_images:
            for domain in {id(source): source, id(target): target}.values():
                domain.cache_images(self.prep, self.workers)
        self.class_names = list(source.class_names)
        self.source_train, self.source_val = data.source_val_split(len(source), cfg.source_val, cfg.seed)
        self.streams = [source.dataset(self.prep, self.source_train if self.source_val else None, augment=self.augment),
                        target.dataset(self.prep, augment=self.augment)]
        self.source_val_ds = source.dataset(self.prep, self.source_val) if self.source_val else None
        self.target_ds = target.dataset(self.prep)
        self.target_labels = target.labels()
        if cfg.target_labeled:
            indices = data.labeled_subset(target, cfg.target_labeled, cfg.seed)
            self.streams.append(target.dataset(self.prep, indices, augment=self.augment))
        self.source_name, self.target_name = source.name, target.name

    def images_per_step(self, world: int = 1) -> int:
        """Images one step consumes on ``world`` ranks together (source, target, labelled target)."""
        b = self.cfg.batch_size
        return world * sum(b if i < 2 else min(b, len(d)) for i, d in enumerate(self.streams))

    def step_keys(self, step: int) -> list[Key]:
        """The keys of every image of ``step``: source, target, then labelled target (semi-supervised)."""
        b, keys = self.cfg.batch_size, []
        for stream, dataset in enumerate(self.streams):
            n = b if stream < 2 else min(b, len(dataset))
            keys += step_draw(len(dataset), n, self.cfg.seed, step, stream, self.rank)
        return keys

    def to_batch(self, streams: Mapping[int, tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        """A collated step (``collate_streams``) moved to the training device."""
        def images(x: torch.Tensor) -> torch.Tensor:
            return x.to(self.device, non_blocking=True, memory_format=self.memory_format)

        def labels(y: torch.Tensor) -> torch.Tensor:
            return y.to(self.device, non_blocking=True)

        (xs, ys), (xt, _) = streams[0], streams[1]
        batch = Batch(images(xs), labels(ys), images(xt))
        if 2 in streams:
            xl, yl = streams[2]
            batch.labeled_target, batch.labeled_target_labels = images(xl), labels(yl)
        return batch

    def batch(self, step: int) -> Batch:
        """The images of ``step``, made in this process (the training loop gets them from ``loader``)."""
        dataset = StreamDataset(self.streams)
        return self.to_batch(collate_streams([dataset[key] for key in self.step_keys(step)]))

    def loader(self, start: int) -> Iterator[Batch]:
        """The batches of steps ``start`` … ``iters - 1`` from ``workers`` processes, prefetched and pinned."""
        steps = StepKeys(self.step_keys, start, self.cfg.iters)
        for streams in loader_of(StreamDataset(self.streams), steps, self.workers, collate_streams,
                                 pin_memory=self.device.type == "cuda"):
            yield self.to_batch(streams)
