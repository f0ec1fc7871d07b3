"""What long-running commands share: progress bars that stay quiet off a terminal, and quiet torch threads."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool | None = None, initial: int = 0):
    """A tqdm bar on stderr; ``enabled=None`` shows it only when stderr is a terminal."""
    from tqdm import tqdm

    quiet = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=quiet, leave=False,
                dynamic_ncols=True)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread while a device is timed on this host: idle torch worker threads spinning next to
    the timed runtime would steal its CPU on a small machine (and exports only trace small graphs)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def say(text: str) -> None:
    """A status line for the user, on stderr (stdout stays for tables and CSV)."""
    print(text, file=sys.stderr, flush=True)
