"""``digits-cnn``: a small plain CNN that trains in minutes on two CPU cores (the default task)."""

from __future__ import annotations

import torch
from torch import nn

from slimda.backbones import register
from slimda.backbones.base import BackboneCfg, SiteBook, SlimBackbone
from slimda.model.ops import SlimBatchNorm2d, SlimConv2d

CFG = BackboneCfg(input_size=28, in_channels=1, mean=(0.5,), std=(0.5,), data_sized=True)


def conv_bn_relu(cin: int, cout: int, stride: int, in_site: str | None, out_site: str) -> nn.Sequential:
    return nn.Sequential(
        SlimConv2d(cin, cout, 3, stride, 1, in_site=in_site, out_site=out_site),
        SlimBatchNorm2d(cout, site=out_site),
        nn.ReLU(inplace=True),
    )


class DigitsBlock(nn.Module):
    """Strided 3×3 conv to the block's inner width, then 3×3 conv to its output width."""

    def __init__(self, cin: int, mid: int, cout: int, in_site: str, mid_site: str, out_site: str) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, mid, 2, in_site, mid_site)
        self.conv2 = conv_bn_relu(mid, cout, 1, mid_site, out_site)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class DigitsCNN(SlimBackbone):
    arch = "digits-cnn"
    channel_multiple = 4

    def __init__(self, in_channels: int = 1, stem: int = 16, stages: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        book = SiteBook()
        prev_site = book.add("stem", stem)
        self.stem = conv_bn_relu(in_channels, stem, 1, None, prev_site)
        blocks, prev = [], stem
        for i, width in enumerate(stages, start=1):
            mid_site = book.add(f"block{i}.mid", width)
            out_site = book.add(f"block{i}", width)
            blocks.append(DigitsBlock(prev, width, width, prev_site, mid_site, out_site))
            prev, prev_site = width, out_site
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.sites = tuple(book.sites)
        self.feature_site = prev_site

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def timing_blocks(self) -> list[tuple[str, nn.Module]]:
        return [("stem", self.stem), *((f"blocks.{i}", b) for i, b in enumerate(self.blocks)), ("pool", self.pool)]


@register("digits-cnn", CFG)
def digits_cnn(in_channels: int = 1) -> DigitsCNN:
    return DigitsCNN(in_channels=in_channels)
