"""Slimmable MobileNetV2 with torchvision's module names (``features.N.conv.M``), so its state dict loads.

Width sites: ``stem``; each inverted residual block's expanded (hidden) width ``features.N``; each
stage's output width ``stageS`` (shared inside the stage because of the residual adds); ``head`` (the
last 1×1 conv, 1280 at full width). The first block expands by 1, so its depthwise conv runs on the stem.
"""

from __future__ import annotations

import torch
from torch import nn

from slimda.backbones import register
from slimda.backbones.base import BackboneCfg, SiteBook, SlimBackbone
from slimda.data.preprocessing import IMAGENET_MEAN_STD
from slimda.model.ops import SlimBatchNorm2d, SlimConv2d

# (expand ratio t, output channels c, blocks n, first stride s), as in torchvision / the paper.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


CFG = BackboneCfg(input_size=224, in_channels=3, mean=IMAGENET_MEAN_STD[0], std=IMAGENET_MEAN_STD[1])


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int, in_site: str | None, out_site: str,
                groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation`` layout: Sequential(conv, bn, ReLU6)."""
    return nn.Sequential(
        SlimConv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, in_site=in_site, out_site=out_site),
        SlimBatchNorm2d(cout, site=out_site),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int,
                 in_site: str, hidden_site: str, out_site: str) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(inp, hidden, 1, 1, in_site, hidden_site))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, hidden_site, hidden_site, groups=hidden),
            SlimConv2d(hidden, oup, 1, in_site=hidden_site, out_site=out_site),
            SlimBatchNorm2d(oup, site=out_site),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class SlimMobileNetV2(SlimBackbone):
    arch = "mobilenet_v2"
    torchvision_classifier_prefix = "classifier."

    def __init__(self, in_channels: int = 3, last_channel: int = 1280) -> None:
        super().__init__()
        book = SiteBook()
        site = book.add("stem", 32)
        features: list[nn.Module] = [conv_bn_act(in_channels, 32, 3, 2, None, site)]
        inp = 32
        for stage, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING, start=1):
            out_site = book.add(f"stage{stage}", c)
            for i in range(n):
                index = len(features)
                hidden_site = book.add(f"features.{index}", inp * t) if t != 1 else site
                in_site = site if i == 0 else out_site
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t, in_site, hidden_site, out_site))
                inp = c
            site = out_site
        head_site = book.add("head", last_channel)
        features.append(conv_bn_act(inp, last_channel, 1, 1, site, head_site))
        self.features = nn.Sequential(*features)
        self.sites = tuple(book.sites)
        self.feature_site = head_site
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return torch.flatten(x, 1)

    def timing_blocks(self) -> list[tuple[str, nn.Module]]:
        return [*((f"features.{i}", m) for i, m in enumerate(self.features)), ("pool", nn.AdaptiveAvgPool2d((1, 1)))]


@register("mobilenet_v2", CFG)
def mobilenet_v2(in_channels: int = 3) -> SlimMobileNetV2:
    return SlimMobileNetV2(in_channels=in_channels)
