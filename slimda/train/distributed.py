"""How a run trains on its device: joining and leaving torchrun's process group, deterministic CUDA kernels
(an exact ``--resume`` needs them), and the end-of-run check that every rank holds the same weights. The
device itself is resolved in ``slimda.model.compute`` (this rank's GPU under torchrun)."""

from __future__ import annotations

import hashlib
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from slimda.errors import SlimdaError
from slimda.model.compute import resolve_device


def use_deterministic_cuda() -> None:
    """Make CUDA training reproducible, which an exact ``--resume`` needs.

    cuDNN picks convolution algorithms by timing them and some backward kernels accumulate with atomics:
    measured on an H100, a resumed 12-step run then differed from the uninterrupted one in the 4th decimal.
    cuBLAS needs a fixed workspace, set before its first call.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def configure_kernels(device: torch.device, deterministic: bool) -> None:
    """``--deterministic``: reproducible kernels (exact ``--resume`` on a GPU), at a cost measured in
    ``benchmarks/train_throughput.py``; otherwise cuDNN may time and pick its fastest convolutions."""
    if deterministic:
        if device.type == "cuda":
            use_deterministic_cuda()
        else:
            torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def init_distributed(device: str = "auto") -> None:
    """Join the process group torchrun describes: NCCL when training on GPUs, gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")


def shutdown_distributed(succeeded: bool) -> None:
    """Leave the process group before the interpreter exits.

    A gloo group left to the interpreter's exit can abort a rank ("terminate called without an active
    exception": its threads are torn down while still joinable), turning a finished run into a failed one.
    After success every rank waits for the others first, so none tears down a group another still uses;
    after a failure there is no barrier (the others may never reach it).
    """
    if dist.is_available() and dist.is_initialized():
        if succeeded:
            dist.barrier()
        dist.destroy_process_group()


def check_ranks_agree(model: nn.Module, rank: int, world: int) -> None:
    """All ranks must end with bit-identical weights; a mismatch would make bank.pt rank 0's alone."""
    # BatchNorm statistics follow each rank's own last batch (DDP re-broadcasts them at every forward):
    # take rank 0's, as DDP would at the next step.
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    mine = torch.tensor([int.from_bytes(digest.digest()[:7], "big")], dtype=torch.long)
    everyone = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    if any(int(d) != int(mine) for d in everyone):
        raise SlimdaError("the ranks of this distributed run ended with different weights")
    if rank == 0:
        print(f"weights identical on {world} ranks", file=sys.stderr)
