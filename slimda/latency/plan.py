"""The block slots of a backbone at one input shape, and the keys that name a block by its absolute shapes.

A latency table (slimda.latency.table) times and predicts per slot; ``static_block`` and
``block_input_shape`` give what a build exports for one slot of one configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from slimda.model.bank import ModelBank
from slimda.model.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear, set_widths, to_static
from slimda.model.space import WidthConfig, WidthSpace

# ------------------------------------------------------------------------------------------------ the plan

@dataclass(frozen=True)
class Channels:
    """Where a block's channel count comes from: a width site, or a fixed number (input image, classes)."""

    site: str | None
    fixed: int

    def value(self, widths: Mapping[str, int]) -> int:
        return int(widths[self.site]) if self.site else self.fixed


@dataclass(frozen=True)
class BlockSlot:
    """One position of the network: a block whose key follows the widths of a configuration."""

    name: str
    kind: str
    cin: Channels
    mid: Channels
    cout: Channels
    stride: int
    hw: tuple[int, int]
    weights_coef: tuple[float, ...] = ()  # parameters as a polynomial of the channels (see ``channel_features``)

    @property
    def group(self) -> str:
        """Kind, stride and input size: keys of one group differ only in their channel counts."""
        return f"{self.kind}|s={self.stride}|hw={self.hw[0]}x{self.hw[1]}"

    def channels(self, widths: Mapping[str, int]) -> tuple[int, int, int]:
        return self.cin.value(widths), self.mid.value(widths), self.cout.value(widths)

    def key(self, widths: Mapping[str, int]) -> str:
        cin, mid, cout = self.channels(widths)
        return f"{self.kind}|in={cin}|mid={mid}|out={cout}|s={self.stride}|hw={self.hw[0]}x{self.hw[1]}"

    def weights_mb(self, widths: Mapping[str, int]) -> float:
        """fp32 weight bytes of the block in MB (exact: parameters are a polynomial of the channels)."""
        if not self.weights_coef:
            return 0.0
        return max(0.0, float((channel_features([self.channels(widths)]) @ np.asarray(self.weights_coef))[0]) * 4 / 1e6)

    def possible_keys(self, space: WidthSpace) -> int:
        sites = {c.site for c in (self.cin, self.mid, self.cout) if c.site}
        return math.prod(len(space.choices[s]) for s in sites)


@dataclass(frozen=True)
class NetPlan:
    """The block slots of one architecture at one input shape (``batch x channels x H x W``)."""

    arch: str
    input_shape: tuple[int, int, int, int]
    num_classes: int
    slots: tuple[BlockSlot, ...]
    sites: tuple[str, ...]  # the width space's site order (configuration ids list widths in it)

    @property
    def input_text(self) -> str:
        return "x".join(str(d) for d in self.input_shape)

    def keys(self, config: WidthConfig) -> list[str]:
        widths = config.as_dict()
        return [slot.key(widths) for slot in self.slots]


def _kind(arch: str, module: nn.Module) -> str:
    """``<arch>.<class>(<ops>)``: the class and its layer sequence, so different structures never share keys."""
    ops = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0]
            ops.append(f"dw{k}" if m.groups > 1 else f"{k}")
        elif isinstance(m, nn.MaxPool2d):
            ops.append("mp")
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            ops.append("gap")
    if getattr(module, "use_res_connect", False):
        ops.append("res")
    return f"{arch}.{type(module).__name__.lower()}({','.join(ops)})"


def _slim_convs(module: nn.Module) -> list[SlimConv2d]:
    return [m for m in module.modules() if isinstance(m, SlimConv2d)]


def _active_params(module: nn.Module) -> int:
    """Parameters of ``module`` at its active widths, from shapes alone (nothing is copied)."""
    total = 0
    for m in module.modules():
        if isinstance(m, SlimConv2d):
            groups = m._active_groups()
            total += m.active_out * (m.active_in // groups) * m.kernel_size[0] * m.kernel_size[1]
            total += m.active_out if m.bias is not None else 0
        elif isinstance(m, SlimBatchNorm2d):
            total += 2 * m.active_out if m.affine else 0
        elif isinstance(m, SlimLinear):
            total += m.active_out * m.active_in + (m.active_out if m.bias is not None else 0)
    return total


def _weights_coef(module: nn.Module, cin: Channels, mid: Channels, cout: Channels) -> tuple[float, ...]:
    """Fit the block's parameter count on ``channel_features`` from probe widths (3 per site): exact, since every
    block here is a sum of conv/linear (products of two channel counts) and norm (one count) layers."""
    sites = {c.site: c.fixed for c in (cin, mid, cout) if c.site}
    probes: list[dict[str, int]] = [{}]
    for site, top in sites.items():
        probes = [{**p, site: v} for p in probes for v in sorted({max(1, top // 4), max(1, top // 2), top})]
    channels, params = [], []
    for widths in probes:
        set_widths(module, widths)
        channels.append((cin.value(widths), mid.value(widths), cout.value(widths)))
        params.append(_active_params(module))
    coef, *_ = np.linalg.lstsq(channel_features(channels), np.asarray(params, dtype=float), rcond=None)
    return tuple(float(c) for c in coef)


@torch.no_grad()
def plan_for(bank: ModelBank, resolution: tuple[int, int], batch: int = 1) -> NetPlan:
    """Trace the bank's blocks once (shapes do not depend on widths) and name each block's channel sites."""
    was_training = bank.training
    bank.eval()
    x = torch.zeros(1, bank.in_channels, *resolution, device=next(bank.parameters()).device)
    slots: list[BlockSlot] = []
    prev = Channels(None, bank.in_channels)
    try:
        set_widths(bank, bank.space.largest().as_dict())
        for name, block in bank.backbone.timing_blocks():
            hw = (int(x.shape[2]), int(x.shape[3]))
            x = block(x)
            stride = max(1, round(hw[0] / int(x.shape[2])))
            convs = _slim_convs(block)
            if convs:
                first, last = convs[0], convs[-1]
                cin = Channels(first.in_site, first.max_in)
                mid = Channels(first.out_site, first.max_out)
                cout = Channels(last.out_site, last.max_out)
            else:  # pooling: channels pass through
                cin = mid = cout = prev
            coef = _weights_coef(block, cin, mid, cout)
            slots.append(BlockSlot(name, _kind(bank.arch, block), cin, mid, cout, stride, hw, coef))
            prev = cout
        head = Channels(None, bank.num_classes)
        slots.append(BlockSlot("head", f"{bank.arch}.linear", prev, prev, head, 1, (1, 1),
                               _weights_coef(bank.head_a, prev, prev, head)))
    finally:
        set_widths(bank, bank.config.as_dict())
        bank.train(was_training)
    return NetPlan(bank.arch, (batch, bank.in_channels, *resolution), bank.num_classes, tuple(slots),
                   bank.space.site_names)


@lru_cache(maxsize=8)
def plan_from_description(arch: str, input_shape: tuple[int, int, int, int], num_classes: int) -> NetPlan:
    bank = ModelBank(arch, num_classes, input_shape[1])
    return plan_for(bank, (input_shape[2], input_shape[3]), input_shape[0])


def static_block(bank: ModelBank, plan: NetPlan, slot: BlockSlot, config: WidthConfig) -> nn.Module:
    """Slot ``slot`` of ``config`` as plain torch layers (the block is exported and timed alone)."""
    set_widths(bank, config.as_dict())
    try:
        if slot.name == "head":
            module = to_static(bank.head_a)
        else:
            module = to_static(dict(bank.backbone.timing_blocks())[slot.name])
    finally:
        set_widths(bank, bank.config.as_dict())
    return module.eval()


def block_input_shape(plan: NetPlan, slot: BlockSlot, config: WidthConfig) -> tuple[int, ...]:
    cin = slot.cin.value(config.as_dict())
    if slot.name == "head":
        return (plan.input_shape[0], cin)
    return (plan.input_shape[0], cin, *slot.hw)


# ------------------------------------------------------------------------------------------------ keys

_KEY_FIELDS = ("in", "mid", "out")


def key_channels(key: str) -> tuple[int, int, int]:
    fields = dict(part.split("=", 1) for part in key.split("|")[1:])
    return tuple(int(fields[f]) for f in _KEY_FIELDS)  # type: ignore[return-value]


def key_group(key: str) -> str:
    parts = key.split("|")
    return "|".join([parts[0], *(p for p in parts[1:] if p.split("=", 1)[0] not in _KEY_FIELDS)])


def channel_features(channels: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """``1, in, mid, out, in·mid, mid², mid·out, in·out``: the terms of a conv block's FLOPs and parameters."""
    c = np.asarray(channels, dtype=float)
    cin, mid, cout = c[:, 0], c[:, 1], c[:, 2]
    return np.stack([np.ones_like(cin), cin, mid, cout, cin * mid, mid * mid, mid * cout, cin * cout], axis=1)
