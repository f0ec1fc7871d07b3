"""Where a run trains: the device for ``--device`` (this rank's GPU under torchrun), joining the process
group, deterministic CUDA kernels (an exact ``--resume`` needs them), and the end-of-run check that every rank
holds the same weights."""

from __future__ import annotations

import hashlib
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from slimda.errors import ConfigError, SlimdaError


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


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (None: float32 throughout).

    ``auto``: bf16 on a CUDA GPU that supports it (Ampere and newer), fp16 on older GPUs, off on the CPU.
    ``bf16`` on the CPU runs CPU autocast (documented fallback: rarely faster there, but the same code path);
    ``fp16`` needs CUDA.
    """
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        if amp == "fp16":
            raise ConfigError(f"--amp fp16 needs a CUDA GPU (this run trains on {device.type}): use --amp bf16 "
                              "(CPU autocast) or --amp off")
        return torch.bfloat16
    bf16_ok = torch.cuda.is_bf16_supported()
    if amp == "bf16" and not bf16_ok:
        raise ConfigError("--amp bf16 needs a GPU with bfloat16 (Ampere or newer); use --amp fp16 on this one")
    return torch.bfloat16 if amp == "bf16" or (amp == "auto" and bf16_ok) else torch.float16


def resolve_device(name: str) -> torch.device:
    """The training device for ``--device`` (auto, cpu, cuda); under torchrun, this rank's GPU."""
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown --device {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but this machine has no usable CUDA GPU")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:
                raise ConfigError(f"torchrun started more processes on this node than it has GPUs ({gpus}): "
                                  f"use --nproc_per_node {gpus}, or --device cpu to train on the CPU")
            device = torch.device("cuda", local_rank)
    return device


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
