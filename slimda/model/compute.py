"""Where and how a model runs: the torch device (``--device``, ``--score-device``), autocast (``--amp``,
``--score-amp``) and the memory layout of scoring (``--score-layout``). Training and scoring resolve their
options here, so ``auto`` means the same thing in both: a CUDA GPU when there is one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from slimda.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
AMPS = ("auto", "off", "bf16", "fp16")
LAYOUTS = ("auto", "nchw", "channels-last")
STAGED_SHARE = 0.5  # target images are kept on a GPU when they take at most this share of its free memory


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """The device for ``option`` (auto, cpu, cuda); under torchrun, this rank's GPU."""
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown {option} {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} cuda asked for, but this machine has no usable CUDA GPU: use {option} cpu")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:
                raise ConfigError(f"torchrun started more processes on this node than it has GPUs ({gpus}): "
                                  f"use --nproc_per_node {gpus}, or {option} cpu to run on the CPU")
            device = torch.device("cuda", local_rank)
    return device


def resolve_amp(amp: str, device: torch.device, option: str = "--amp") -> torch.dtype | None:
    """The autocast dtype for ``option`` on ``device`` (None: float32 throughout).

    ``auto``: bf16 on a CUDA GPU that supports it (Ampere and newer), fp16 on older GPUs, off on the CPU.
    ``bf16`` on the CPU runs CPU autocast; ``fp16`` needs CUDA.
    """
    if amp not in AMPS:
        raise ConfigError(f"unknown {option} {amp!r}: use one of {', '.join(AMPS)}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        if amp == "fp16":
            raise ConfigError(f"{option} fp16 needs a CUDA GPU (this runs on {device.type}): use {option} bf16 "
                              f"(CPU autocast) or {option} off")
        return torch.bfloat16
    bf16_ok = torch.cuda.is_bf16_supported()
    if amp == "bf16" and not bf16_ok:
        raise ConfigError(f"{option} bf16 needs a GPU with bfloat16 (Ampere or newer); use {option} fp16 on this one")
    return torch.bfloat16 if amp == "bf16" or (amp == "auto" and bf16_ok) else torch.float16


@dataclass(frozen=True)
class Compute:
    """How sub-networks are scored: on ``device``, in ``channels_last`` layout, under autocast to ``amp``.

    The default is the exact reference: fp32, NCHW, on the CPU. ``benchmarks/deploy_scale.py`` measures what
    the faster settings change in the candidates' ranking (UPEM and top-1 against this reference).
    """

    device: torch.device = torch.device("cpu")
    amp: torch.dtype | None = None
    channels_last: bool = False

    @property
    def label(self) -> str:
        """``cuda:0 bf16 channels-last``, ``cpu fp32 nchw``: what a manifest and a log line record."""
        amp = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp]
        return f"{self.device} {amp} {'channels-last' if self.channels_last else 'nchw'}"

    def exact(self) -> Compute:
        """The same device in fp32 and NCHW: for the network that is exported (its BatchNorm statistics)."""
        return replace(self, amp=None, channels_last=False)

    def module(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def stage(self, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``batches`` kept on the scoring GPU (in its layout) when they fit in ``STAGED_SHARE`` of its free
        memory, so that no candidate copies them again; else as they are (each batch is copied when used)."""
        if self.device.type != "cuda":
            return list(batches)
        size = sum(b.numel() * b.element_size() for b in batches)
        free, _ = torch.cuda.mem_get_info(self.device)
        if size > STAGED_SHARE * free:
            return list(batches)
        return [self.input(b) for b in batches]


CPU = Compute()


def resolve_compute(device: str = "auto", amp: str = "auto", layout: str = "auto") -> Compute:
    """``--score-device``, ``--score-amp`` and ``--score-layout`` resolved for this machine.

    ``auto`` scores on a CUDA GPU when there is one, under bf16 autocast (fp16 on GPUs without bf16) in
    channels-last; on the CPU in fp32 and NCHW, the reference every earlier deployment was scored with.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown --score-layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    where = resolve_device(device, "--score-device")
    channels_last = layout == "channels-last" or (layout == "auto" and where.type == "cuda")
    return Compute(where, resolve_amp(amp, where, "--score-amp"), channels_last)
