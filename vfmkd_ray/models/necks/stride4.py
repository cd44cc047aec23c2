"""YOLC's neck: every backbone level at stride >= 4 projected, upsampled to stride 4 and summed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.necks.base import Neck

STRIDE = 4


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class StrideFourNeck(Neck):
    """One ``channels``-wide level at stride 4."""

    def __init__(self, backbone_info: FeatureInfo, channels: int):
        super().__init__()
        strides = backbone_info.reduction()
        self.levels = [i for i, s in enumerate(strides) if s >= STRIDE]
        if not self.levels or strides[self.levels[0]] != STRIDE:
            raise ValueError(f"neck stride4 needs a stride-4 backbone level; the student has {strides}")
        self.lateral = nn.ModuleList(nn.Conv2d(backbone_info.channels()[i], channels, 1) for i in self.levels)
        self.fuse = conv_bn_relu(channels, channels)
        self.feature_info = FeatureInfo([FeatureLevel(channels, STRIDE, "neck.fuse")])

    def forward(self, levels: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        base = self.lateral[0](levels[self.levels[0]])
        for lateral, level in zip(self.lateral[1:], self.levels[1:], strict=True):
            base = base + F.interpolate(lateral(levels[level]), size=base.shape[-2:], mode="nearest")
        return (self.fuse(base),)
