"""Image files of folder domains: reading them (every failure a ``DataError`` naming the file), and the
datasets that decode them, with an optional in-memory cache of decoded, resized images.

A photo is decoded and resized once per item with PIL (the resize the manifest's recipe describes), then the
rest of the pipeline (crop, flip, scaling, normalisation) runs on the uint8 tensor. ``--cache-images`` keeps
that uint8 tensor, so later passes skip the JPEG decoder and the resize, the dearest part of the item.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from slimda.data.decode import load_rgb_or_grey, probe
from slimda.data.preprocessing import Preprocessing
from slimda.errors import DataError

_CACHE_SHARE_OF_FREE_MEMORY = 0.5  # --cache-images refuses to take more than this share of free memory


def decode_resized(path: Path, prep: Preprocessing) -> torch.Tensor:
    """The image at ``path`` decoded, converted to the model's channels and resized: uint8 ``[C, H, W]``."""
    image = prep.resize_pil(load_rgb_or_grey(path, prep.channels))
    array = np.asarray(image, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class FolderDataset(Dataset):
    """Items ``(float32 [C, H, W], label)`` of image files: decoded and resized per item, or taken from
    ``cache`` (uint8 tensors after the resize, in file order) when one is given."""

    def __init__(self, files: list[Path], labels: list[int], prep: Preprocessing, augment: str = "none",
                 cache: Sequence[torch.Tensor] | None = None) -> None:
        self.files, self.labels, self.prep, self.cache = files, labels, prep, cache
        self.transform = prep.transform(train=augment != "none", augment=augment)
        self.random = augment != "none"

    def __len__(self) -> int:
        return len(self.files)

    def decoded(self, i: int) -> torch.Tensor:
        return self.cache[i] if self.cache is not None else decode_resized(self.files[i], self.prep)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.decoded(i)), self.labels[i]


class _Decoder(Dataset):
    """Decoding only (no crop or normalisation), for the pass that fills a cache."""

    def __init__(self, files: list[Path], prep: Preprocessing) -> None:
        self.files, self.prep = files, prep

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return decode_resized(self.files[i], self.prep)


def check_cache_fits(count: int, first: Path, prep: Preprocessing) -> int:
    """Bytes a cache of ``count`` images like ``first`` would take; a ``DataError`` when it would not fit."""
    _, (h, w) = probe(first)
    dh, dw = prep.decoded_size(h, w)
    need = count * prep.channels * dh * dw
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not reported on this system: trust the user
        return need
    if need > _CACHE_SHARE_OF_FREE_MEMORY * free:
        raise DataError(f"--cache-images would keep about {need / 2**30:.1f} GiB of decoded images "
                        f"({count} images of {prep.channels}x{dh}x{dw}), more than half of this machine's free "
                        f"memory ({free / 2**30:.1f} GiB): run without --cache-images, or use a smaller --resolution")
    return need


def build_cache(files: list[Path], prep: Preprocessing, workers: int, desc: str) -> list[torch.Tensor]:
    """Every file decoded and resized once (in ``workers`` processes), as uint8 tensors in file order.

    Built before the training loader starts its workers, which then share these tensors' memory (fork).
    """
    from slimda.data.loading import loader_of

    check_cache_fits(len(files), files[0], prep)
    cache: list[torch.Tensor] = []
    for chunk in loader_of(_Decoder(files, prep), [list(range(i, min(i + 64, len(files))))
                                                   for i in range(0, len(files), 64)],
                           workers=workers, collate=list, progress=desc):
        # own memory, not the worker's shared-memory segment: thousands of those would each hold a descriptor
        cache.extend(t.clone() for t in chunk)
    return cache
