"""Adapters from a student feature level to a distillation target, sized from ``feature_info``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureAdapter(nn.Module):
    """1x1 conv to the teacher's channels, then bilinear resize to the teacher's grid."""

    def __init__(self, in_channels: int, out_channels: int, out_hw: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.out_hw = tuple(out_hw)

    def forward(self, feat_BCHW: torch.Tensor) -> torch.Tensor:
        out = self.proj(feat_BCHW)
        if tuple(out.shape[-2:]) != self.out_hw:
            out = F.interpolate(out, size=self.out_hw, mode="bilinear", align_corners=False)
        return out


class EdgeAdapter(nn.Module):
    """A small head predicting one edge logit per position of a fine student level."""

    def __init__(self, in_channels: int, hidden: int = 32):
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden),
            nn.SiLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, feat_BCHW: torch.Tensor) -> torch.Tensor:
        return self.head(feat_BCHW)
