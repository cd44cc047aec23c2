"""The YOLC-style detection head on the stride-4 neck: a per-class center heatmap, a coarse box map
and a refined box map.

The refined map comes from a deformable 3 x 3 convolution whose nine sampling points are spread
inside the (detached) coarse box of each location, so the refinement looks at the object it refines
rather than a fixed neighbourhood. Box maps are in ``boxes.decode``'s encoding; sizes are kept
positive by a softplus.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vfmkd_ray.heads.base import Features
from vfmkd_ray.models.necks.stride4 import conv_bn_relu

STRIDE = 4
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid = 0.1: a calm start for the focal loss (CenterNet)
SAMPLE_SPREAD = 2 / 3  # sampling points at +-2/3 of the half size: inside the coarse box


@dataclass
class DetectorOutput:
    heatmap_BKHW: torch.Tensor  # logits
    coarse_B4HW: torch.Tensor
    refined_B4HW: torch.Tensor


class CenterBoxHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.heatmap = nn.Sequential(conv_bn_relu(in_channels, channels), nn.Conv2d(channels, num_classes, 1))
        nn.init.constant_(self.heatmap[-1].bias, HEATMAP_PRIOR_BIAS)
        self.coarse = nn.Sequential(conv_bn_relu(in_channels, channels), nn.Conv2d(channels, 4, 1))
        self.refine_weight = nn.Parameter(torch.empty(channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.refine_weight, a=1)
        self.refine_out = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, 4, 1)
        )
        nn.init.zeros_(self.refine_out[-1].weight)  # start as the coarse box
        nn.init.zeros_(self.refine_out[-1].bias)

    def forward(self, neck: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heatmap = self.heatmap(neck)
        raw = self.coarse(neck)
        coarse = torch.cat([raw[:, :2], F.softplus(raw[:, 2:])], dim=1)
        offsets = box_sampling_offsets(coarse.detach())
        from torchvision.ops import deform_conv2d  # as in heads.yolov8.head: not at import

        sampled = deform_conv2d(neck, offsets, self.refine_weight, padding=(1, 1))
        delta = self.refine_out(sampled)
        # Refined = coarse.detach() moved by delta (center) and scaled by exp(delta) (size).
        refined = torch.cat(
            [
                coarse.detach()[:, :2] + delta[:, :2],
                coarse.detach()[:, 2:] * torch.exp(delta[:, 2:].clamp(-4, 4)),
            ],
            dim=1,
        )
        return heatmap, coarse, refined


def box_sampling_offsets(coarse_B4HW: torch.Tensor) -> torch.Tensor:
    """``deform_conv2d`` offsets (B x 18 x H x W, (dy, dx) per kernel tap) that move the 3 x 3
    taps of each location onto a grid inside its coarse box (all in grid units)."""
    dx, dy, half_w, half_h = coarse_B4HW.unbind(1)
    offsets = []
    for ky in (-1, 0, 1):
        for kx in (-1, 0, 1):
            # target - regular tap position (location + (ky, kx))
            offsets.append(dy + ky * SAMPLE_SPREAD * half_h - ky)
            offsets.append(dx + kx * SAMPLE_SPREAD * half_w - kx)
    return torch.stack(offsets, dim=1)


class YOLCHeadModule(nn.Module):
    """What ``MultiTaskModel.heads[name]`` holds for a yolc head: the head on one neck level."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, level: int):
        super().__init__()
        self.level = level
        self.head = CenterBoxHead(in_channels, channels, num_classes)

    def forward(self, features: Features) -> DetectorOutput:
        assert features.neck is not None, "built only on a model with a stride-4 neck"
        return DetectorOutput(*self.head(features.neck[self.level]))
