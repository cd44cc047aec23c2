"""The YOLC-style detector: any student backbone, a neck to stride 4, and a head with a per-class
center heatmap, a coarse box map and a refined box map.

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
from torchvision.ops import deform_conv2d

from vfmkd_ray.detection.config import DetectionConfig
from vfmkd_ray.models.students.base import StudentBackbone

STRIDE = 4
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid = 0.1: a calm start for the focal loss (CenterNet)
SAMPLE_SPREAD = 2 / 3  # sampling points at +-2/3 of the half size: inside the coarse box


@dataclass
class DetectorOutput:
    heatmap_BKHW: torch.Tensor  # logits
    coarse_B4HW: torch.Tensor
    refined_B4HW: torch.Tensor
    neck_BCHW: torch.Tensor  # what feature-KD terms (FGD) distill


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class StrideFourNeck(nn.Module):
    """Every backbone level at stride >= 4, projected, upsampled to stride 4 and summed."""

    def __init__(self, backbone: StudentBackbone, channels: int):
        super().__init__()
        strides = backbone.feature_info.reduction()
        self.levels = [i for i, s in enumerate(strides) if s >= STRIDE]
        if not self.levels or strides[self.levels[0]] != STRIDE:
            raise ValueError(f"the detector needs a stride-4 backbone level; the student has {strides}")
        self.lateral = nn.ModuleList(
            nn.Conv2d(backbone.feature_info.channels()[i], channels, 1) for i in self.levels
        )
        self.fuse = _conv_bn_relu(channels, channels)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        base = self.lateral[0](features[self.levels[0]])
        for lateral, level in zip(self.lateral[1:], self.levels[1:], strict=True):
            base = base + F.interpolate(lateral(features[level]), size=base.shape[-2:], mode="nearest")
        return self.fuse(base)


class CenterBoxHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.heatmap = nn.Sequential(
            _conv_bn_relu(in_channels, channels), nn.Conv2d(channels, num_classes, 1)
        )
        nn.init.constant_(self.heatmap[-1].bias, HEATMAP_PRIOR_BIAS)
        self.coarse = nn.Sequential(_conv_bn_relu(in_channels, channels), nn.Conv2d(channels, 4, 1))
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


class YOLCDetector(nn.Module):
    def __init__(self, backbone: StudentBackbone, cfg: DetectionConfig):
        super().__init__()
        self.backbone = backbone
        self.neck = StrideFourNeck(backbone, cfg.neck_channels)
        self.head = CenterBoxHead(cfg.neck_channels, cfg.head_channels, cfg.num_classes)
        self.stride = STRIDE

    def forward(self, images_BCHW: torch.Tensor) -> DetectorOutput:
        neck = self.neck(self.backbone(images_BCHW))
        heatmap, coarse, refined = self.head(neck)
        return DetectorOutput(heatmap, coarse, refined, neck)
