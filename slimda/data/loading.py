"""Feeding images to training and to every pass over target images, through torch's DataLoader.

Worker processes decode and augment while the model computes; batches are pinned for a fast copy to the GPU.
What a batch holds never depends on the workers: the trainer hands the loader the *keys* of every step's
images, ``(stream, index, seed)``, a pure function of (run seed, step, stream, rank), and an item with a
seed is augmented under exactly that seed (``torch.manual_seed`` inside ``fork_rng``), in whichever process
makes it. So ``--resume`` ends with the weights of an uninterrupted run whatever ``--workers`` is.

An unreadable image in a worker comes back as a ``DataError`` naming the file, as it would without workers,
rather than as DataLoader's wrapped traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from slimda.errors import DataError

Key = tuple[int, int, int | None]  # (stream, index in that stream's dataset, augmentation seed or None)


def cpu_count() -> int:
    """Cores this process may use (its affinity mask, not the whole machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """torch's intra-op threads unless ``--threads`` says otherwise: half the cores.

    torch's own default takes every core; two such processes on one host (a training beside a table build,
    a deploy or the tests) then spin against each other and each runs several times slower than alone
    (measured in ``benchmarks/train_throughput.py``). Half the cores leaves room for a neighbour and for
    the loader's workers.
    """
    return max(1, cpu_count() // 2)


def use_threads(threads: int | None, option: str = "--threads") -> int:
    """Set torch's intra-op threads to ``threads`` (None: ``default_threads()``); returns the count used."""
    from slimda.errors import ConfigError

    if threads is not None and threads < 1:
        raise ConfigError(f"{option} must be at least 1, got {threads}")
    count = threads or default_threads()
    torch.set_num_threads(count)
    return count


def default_workers(threads: int, in_memory: bool, cuda: bool = False) -> int:
    """Loader processes unless ``--workers`` says otherwise: none for images already in memory as tensors
    (the built-in digits: a worker would only copy them); training on a GPU, every core but two (the GPU does
    the arithmetic, the CPU's work is decoding JPEGs), up to 16; on the CPU, the cores the compute threads
    leave, 1 to 8 (``benchmarks/input_pipeline.py``)."""
    if in_memory:
        return 0
    if cuda:
        return max(1, min(16, cpu_count() - 2))
    return max(1, min(8, cpu_count() - threads))


@dataclass(frozen=True)
class _Failure:
    """An item that could not be made (in a worker or not); re-raised by the iterating process."""

    message: str


class _Guarded(Dataset):
    """Turns a ``DataError`` of one item into a value, so the message crosses the worker boundary intact."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key):  # noqa: ANN001 - whatever key the wrapped dataset takes
        try:
            return self.dataset[key]
        except DataError as err:
            return _Failure(str(err))


class _Collate:
    """The wrapped collate, unless an item failed: then the failure is the batch."""

    def __init__(self, collate: Callable) -> None:
        self.collate = collate

    def __call__(self, items: list):
        failed = next((item for item in items if isinstance(item, _Failure)), None)
        return failed if failed is not None else self.collate(items)


def loader_of(dataset: Dataset, batches: Iterable[Sequence], workers: int = 0, collate: Callable = default_collate,
              pin_memory: bool = False, progress: str | None = None) -> Iterator:
    """The collated batches of ``dataset`` for each list of keys in ``batches``, made by ``workers`` processes
    (0: in this one) and prefetched; a failed item raises its ``DataError`` here. ``progress`` names a tqdm bar."""
    loader = DataLoader(_Guarded(dataset), batch_sampler=batches, num_workers=workers, collate_fn=_Collate(collate),
                        pin_memory=pin_memory)
    iterator: Iterable = loader
    if progress:
        from tqdm import tqdm

        total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
        iterator = tqdm(loader, total=total, desc=progress, unit="batch", disable=None, leave=False)
    with _sigchld_restored(workers > 0):
        for batch in iterator:
            if isinstance(batch, _Failure):
                raise DataError(batch.message)
            yield batch


@contextlib.contextmanager
def _sigchld_restored(active: bool) -> Iterator[None]:
    """Put back the SIGCHLD handler that DataLoader's workers replace.

    DataLoader installs a Python SIGCHLD handler once and keeps it for the life of the process. With OpenVINO's
    and ONNX Runtime's threads alive, the exit of any later child process (``subprocess.run``) then killed this
    process with a segmentation fault (reproduced: a loader with one worker, a paired measurement on both
    runtimes, then any subprocess). While no loader runs, the process keeps the handler it had.
    """
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    from torch.utils.data._utils import signal_handling

    previous = signal.getsignal(signal.SIGCHLD)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)
        signal_handling._SIGCHLD_handler_set = False  # the next loader installs it again


def image_batches(dataset: Dataset, batch_size: int, indices: Sequence[int] | None = None,
                  device: str | torch.device = "cpu", workers: int = 0,
                  progress: str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches of ``dataset`` in order (labels -1 where the domain has none)."""
    order = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    device = torch.device(device)
    for images, labels in loader_of(dataset, chunks, workers, pin_memory=device.type == "cuda", progress=progress):
        yield images.to(device, non_blocking=True), labels


# ------------------------------------------------------------------------------------------------ training


class StreamDataset(Dataset):
    """Several datasets (source, target, labelled target), each item addressed by a key ``(stream, index,
    seed)``; an augmenting dataset (``random`` true) makes the item under ``seed``. Items are ``(stream, x, y)``."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> tuple[int, torch.Tensor, int]:
        stream, index, seed = key
        dataset = self.datasets[stream]
        if seed is None or not getattr(dataset, "random", False):
            x, y = dataset[index]
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x, y = dataset[index]
        return stream, x, y


def collate_streams(items: list[tuple[int, torch.Tensor, int]]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Items of one step grouped by stream, in key order: ``{stream: (images, labels)}``."""
    out: dict[int, tuple[list, list]] = {}
    for stream, x, y in items:
        xs, ys = out.setdefault(stream, ([], []))
        xs.append(x)
        ys.append(y)
    return {s: (torch.stack(xs), torch.tensor(ys, dtype=torch.long)) for s, (xs, ys) in out.items()}


class StepKeys:
    """The keys of steps ``start`` … ``stop - 1``, one list per step: ``keys_of(step)`` is a pure function."""

    def __init__(self, keys_of: Callable[[int], list[Key]], start: int, stop: int) -> None:
        self.keys_of, self.start, self.stop = keys_of, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[Key]]:
        return (self.keys_of(step) for step in range(self.start, self.stop))
