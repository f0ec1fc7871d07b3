"""Slimmable ResNet-18/50 with torchvision's module names, so torchvision state dicts load unchanged.

Width sites: ``stem``; one inner width per block (``layerS.B``); one output width per stage
(``layerS``), shared by all blocks of the stage because of the residual adds. A stage whose first
block has no projection (ResNet-18's ``layer1``) keeps the width of what comes in.
"""

from __future__ import annotations

import torch
from torch import nn

from slimda.backbones import register
from slimda.backbones.base import BackboneCfg, SiteBook, SlimBackbone
from slimda.data.preprocessing import IMAGENET_MEAN_STD
from slimda.model.ops import SlimBatchNorm2d, SlimConv2d

CFG = BackboneCfg(input_size=224, in_channels=3, mean=IMAGENET_MEAN_STD[0], std=IMAGENET_MEAN_STD[1])


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 in_site: str, mid_site: str, out_site: str) -> None:
        super().__init__()
        self.conv1 = SlimConv2d(inplanes, planes, 3, stride, 1, in_site=in_site, out_site=mid_site)
        self.bn1 = SlimBatchNorm2d(planes, site=mid_site)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = SlimConv2d(planes, planes, 3, 1, 1, in_site=mid_site, out_site=out_site)
        self.bn2 = SlimBatchNorm2d(planes, site=out_site)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 in_site: str, mid_site: str, out_site: str) -> None:
        super().__init__()
        self.conv1 = SlimConv2d(inplanes, planes, 1, in_site=in_site, out_site=mid_site)
        self.bn1 = SlimBatchNorm2d(planes, site=mid_site)
        self.conv2 = SlimConv2d(planes, planes, 3, stride, 1, in_site=mid_site, out_site=mid_site)
        self.bn2 = SlimBatchNorm2d(planes, site=mid_site)
        self.conv3 = SlimConv2d(planes, planes * 4, 1, in_site=mid_site, out_site=out_site)
        self.bn3 = SlimBatchNorm2d(planes * 4, site=out_site)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class SlimResNet(SlimBackbone):
    torchvision_classifier_prefix = "fc."

    def __init__(self, arch: str, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...],
                 in_channels: int = 3) -> None:
        super().__init__()
        self.arch = arch
        book = SiteBook()
        site = book.add("stem", 64)
        self.conv1 = SlimConv2d(in_channels, 64, 7, 2, 3, in_site=None, out_site=site)
        self.bn1 = SlimBatchNorm2d(64, site=site)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if stage == 1 else 2
            out_channels = planes * block.expansion
            needs_projection = stride != 1 or inplanes != out_channels
            out_site = book.add(f"layer{stage}", out_channels) if needs_projection else site
            blocks = []
            for b in range(count):
                downsample = None
                if b == 0 and needs_projection:
                    downsample = nn.Sequential(
                        SlimConv2d(inplanes, out_channels, 1, stride, in_site=site, out_site=out_site),
                        SlimBatchNorm2d(out_channels, site=out_site),
                    )
                mid_site = book.add(f"layer{stage}.{b}", planes)
                in_site = site if b == 0 else out_site
                blocks.append(block(inplanes, planes, stride if b == 0 else 1, downsample,
                                    in_site, mid_site, out_site))
                inplanes = out_channels
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            site = out_site
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.sites = tuple(book.sites)
        self.feature_site = site
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so an untrained bank behaves like an untrained torchvision model.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def timing_blocks(self) -> list[tuple[str, nn.Module]]:
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        stages = [(f"layer{s}.{i}", b) for s in range(1, 5) for i, b in enumerate(getattr(self, f"layer{s}"))]
        return [("stem", stem), *stages, ("avgpool", self.avgpool)]


@register("resnet18", CFG)
def resnet18(in_channels: int = 3) -> SlimResNet:
    return SlimResNet("resnet18", BasicBlock, (2, 2, 2, 2), in_channels)


@register("resnet50", CFG)
def resnet50(in_channels: int = 3) -> SlimResNet:
    return SlimResNet("resnet50", Bottleneck, (3, 4, 6, 3), in_channels)
