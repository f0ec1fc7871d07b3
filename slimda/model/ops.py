"""Slimmable layers: hold the weights of the widest network, use the first ``c`` channels of each.

Each layer subclasses the torch layer it slims, so parameter names (and therefore torchvision state
dicts) are unchanged. A layer reads its active channel counts from its *sites* (see ``slimda.model.space``);
``set_widths`` broadcasts a configuration to every layer once, instead of a global flag read in
``forward``. ``to_static`` returns the ordinary torch layer with copied, physically sliced tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class SlimOp:
    """Mixin: a layer whose input/output channels follow width sites (``None``: fixed at full size)."""

    in_site: str | None
    out_site: str | None
    max_in: int
    max_out: int
    active_in: int
    active_out: int

    def _init_sites(self, in_site: str | None, out_site: str | None, max_in: int, max_out: int) -> None:
        self.in_site, self.out_site = in_site, out_site
        self.max_in, self.max_out = max_in, max_out
        self.active_in, self.active_out = max_in, max_out

    def activate(self, widths: Mapping[str, int]) -> None:
        """Take the channel counts of this layer's sites from ``widths`` (missing site: full width)."""
        self.active_in = widths.get(self.in_site, self.max_in) if self.in_site else self.max_in
        self.active_out = widths.get(self.out_site, self.max_out) if self.out_site else self.max_out

    def to_static(self) -> nn.Module:  # pragma: no cover - each subclass implements it
        raise NotImplementedError


class SlimConv2d(nn.Conv2d, SlimOp):
    """Conv2d over the first channels. Grouped convs keep the channels per group fixed, so the number of
    groups follows the width (depthwise: one channel per group); they need tied input/output sites."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
        *,
        in_site: str | None,
        out_site: str | None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        if groups > 1 and (in_site != out_site or in_channels != out_channels):
            raise ValueError("a slimmable grouped conv needs the same site (and channels) in and out")
        self._init_sites(in_site, out_site, in_channels, out_channels)
        self.group_width = in_channels // groups

    def _active_groups(self) -> int:
        if self.groups == 1:
            return 1
        if self.active_in % self.group_width:
            raise ValueError(f"{self.active_in} channels do not split into groups of {self.group_width}")
        return self.active_in // self.group_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self._active_groups()
        weight = self.weight[: self.active_out, : self.active_in // groups]
        bias = self.bias[: self.active_out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def to_static(self) -> nn.Conv2d:
        groups = self._active_groups()
        conv = nn.Conv2d(
            self.active_in,
            self.active_out,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            groups=groups,
            bias=self.bias is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(self.weight[: self.active_out, : self.active_in // groups])
            if self.bias is not None:
                conv.bias.copy_(self.bias[: self.active_out])
        return conv


class SlimLinear(nn.Linear, SlimOp):
    """Linear layer over the first input features (and first outputs when ``out_site`` is set)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, in_site: str | None, out_site: str | None
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_sites(in_site, out_site, in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias[: self.active_out] if self.bias is not None else None
        return F.linear(x, self.weight[: self.active_out, : self.active_in], bias)

    def to_static(self) -> nn.Linear:
        linear = nn.Linear(self.active_in, self.active_out, bias=self.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.weight[: self.active_out, : self.active_in])
            if self.bias is not None:
                linear.bias.copy_(self.bias[: self.active_out])
        return linear


class SlimBatchNorm2d(nn.BatchNorm2d, SlimOp):
    """BatchNorm with shared, sliced affine parameters and statistics.

    The statistics of a sub-network are not those of the slice of the full network's statistics: they
    are recalibrated on (target) images before evaluation or export (``slimda.model.bn.recalibrate``).
    """

    def __init__(self, num_features: int, *, site: str | None) -> None:
        super().__init__(num_features)
        self._init_sites(site, site, num_features, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.active_out
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:c] if track and self.running_mean is not None else None,
            self.running_var[:c] if track and self.running_var is not None else None,
            self.weight[:c] if self.weight is not None else None,
            self.bias[:c] if self.bias is not None else None,
            use_batch_stats,
            factor,
            self.eps,
        )

    def to_static(self) -> nn.BatchNorm2d:
        c = self.active_out
        bn = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum)
        with torch.no_grad():
            bn.weight.copy_(self.weight[:c])
            bn.bias.copy_(self.bias[:c])
            bn.running_mean.copy_(self.running_mean[:c])
            bn.running_var.copy_(self.running_var[:c])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn


def set_widths(module: nn.Module, widths: Mapping[str, int]) -> None:
    """Make every slimmable layer in ``module`` use the channel counts of ``widths``."""
    for m in module.modules():
        if isinstance(m, SlimOp):
            m.activate(widths)


def to_static(module: nn.Module) -> nn.Module:
    """A copy of ``module`` at its active widths in which every slimmable layer is a plain torch layer.

    Containers are copied shallowly with fresh child dicts, so the bank itself is never modified and its
    full-size tensors are never duplicated.
    """
    if isinstance(module, SlimOp):
        static = module.to_static()
        static.train(module.training)
        return static
    if module._parameters and any(p is not None for p in module._parameters.values()):
        raise TypeError(f"{type(module).__name__} holds parameters but is not slimmable; cannot extract it")
    new = module.__new__(type(module))
    new.__dict__ = dict(module.__dict__)
    new._parameters = {}
    new._buffers = {k: (v.clone() if v is not None else None) for k, v in module._buffers.items()}
    new._modules = {name: (to_static(child) if child is not None else None) for name, child in module._modules.items()}
    return new


def contains_slim_ops(module: nn.Module) -> bool:
    return any(isinstance(m, SlimOp) for m in module.modules())
