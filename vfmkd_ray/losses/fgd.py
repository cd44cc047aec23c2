"""FGD, focal and global distillation (Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022), for detection students.

- focal: feature MSE weighted by the teacher's spatial and channel attention, split into the
  ground-truth foreground (each box's pixels weighted by 1 / its area) and the background;
- attention: L1 between the student's and the teacher's spatial and channel attention;
- global: MSE between the two feature maps after a GcBlock (global context) each.

The adapter aligns the student's channels to the teacher's and carries the two GcBlocks; their last
convolutions start at zero, so the loss is exactly zero when student and teacher features agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vfmkd_ray.batch import Batch, DataNeeds
from vfmkd_ray.losses.base import LossTerm, StudentLevels, teacher_cosine
from vfmkd_ray.losses.config import FGDConfig


class GlobalContext(nn.Module):
    """GcBlock: attention-pooled context, transformed and added back to every position."""

    def __init__(self, channels: int):
        super().__init__()
        self.mask = nn.Conv2d(channels, 1, 1)
        hidden = max(1, channels // 2)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        batch, channels = x_BCHW.shape[:2]
        weights = self.mask(x_BCHW).flatten(2).softmax(dim=2)  # B x 1 x HW
        context = torch.bmm(x_BCHW.flatten(2), weights.transpose(1, 2)).view(batch, channels, 1, 1)
        return x_BCHW + self.transform(context)


class FGDAdapter(nn.Module):
    """Aligns the student's channels (and grid) to the teacher's, and carries the two GcBlocks."""

    def __init__(self, student_channels: int, teacher_channels: int, teacher_hw: tuple[int, int]):
        super().__init__()
        self.align = (
            nn.Identity()
            if student_channels == teacher_channels
            else nn.Conv2d(student_channels, teacher_channels, 1)
        )
        self.teacher_hw = tuple(teacher_hw)
        self.context_student = GlobalContext(teacher_channels)
        self.context_teacher = GlobalContext(teacher_channels)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        out = self.align(x_BCHW)
        if tuple(out.shape[-2:]) != self.teacher_hw:
            out = F.interpolate(out, size=self.teacher_hw, mode="bilinear", align_corners=False)
        return out


def attention(features_BCHW: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial (B x H x W, sums to H*W) and channel (B x C, sums to C) attention."""
    batch, channels, height, width = features_BCHW.shape
    value = features_BCHW.abs()
    spatial = (value.mean(dim=1).view(batch, -1) / temperature).softmax(dim=1) * height * width
    channel = (value.mean(dim=(2, 3)) / temperature).softmax(dim=1) * channels
    return spatial.view(batch, height, width), channel


def box_masks(
    boxes: list[torch.Tensor], image_size: int, grid: tuple[int, int], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground (1 / box area on the grid, max over boxes) and normalised background masks."""
    height, width = grid
    foreground = torch.zeros(len(boxes), height, width, device=device)
    for b, image_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in (
            image_boxes.float() * torch.tensor([width, height, width, height], device=device) / image_size
        ).tolist():
            left, top = max(0, int(x1)), max(0, int(y1))
            right, bottom = min(width - 1, int(x2)), min(height - 1, int(y2))
            if right < left or bottom < top:
                continue
            area = 1.0 / ((bottom + 1 - top) * (right + 1 - left))
            region = foreground[b, top : bottom + 1, left : right + 1]
            foreground[b, top : bottom + 1, left : right + 1] = region.clamp_min(area)
    background = (foreground == 0).float()
    background = background / background.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    return foreground, background


FGD_MAX_BOXES = 100  # ground-truth boxes per image the foreground mask is drawn from


class FGD(LossTerm):
    def __init__(self, name: str, cfg: FGDConfig, levels: StudentLevels, teacher_key: str, teacher_shape):
        super().__init__(
            name, cfg.weight, levels, cfg.student_stride, cfg.student_source, cfg.normalize, cfg.adaptive
        )
        self.cfg = cfg
        self.teacher_key = teacher_key
        self.teacher_layers = (teacher_key,)
        self.teacher_channels = teacher_shape[0]
        self.teacher_hw = tuple(teacher_shape[1:])
        self.adapter: FGDAdapter | None = None

    def build_adapter(self) -> nn.Module:
        self.adapter = FGDAdapter(self.in_channels, self.teacher_channels, self.teacher_hw)
        return self.adapter

    def needs(self) -> DataNeeds:
        return DataNeeds(max_objects=FGD_MAX_BOXES)

    def __call__(self, pred_BCHW: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, adapter = self.cfg, self.adapter
        student = pred_BCHW.float()
        teacher = self.teacher_target(batch, self.teacher_key).detach().float()
        coverage = batch.teacher_coverage.get(self.teacher_key)
        if coverage is not None:
            # A warped target's uncovered cells hold no teacher: neither side is compared there.
            student, teacher = student * coverage, teacher * coverage
        size = batch.image_size
        foreground, background = box_masks(batch.boxes(), size, tuple(teacher.shape[-2:]), teacher.device)
        spatial_t, channel_t = attention(teacher, cfg.temperature)
        spatial_s, channel_s = attention(student, cfg.temperature)
        weight = (spatial_t[:, None] * channel_t[:, :, None, None]).sqrt()
        difference = (student - teacher) * weight
        batch_size = len(student)
        fg_loss = (difference.pow(2) * foreground[:, None]).sum() / batch_size
        bg_loss = (difference.pow(2) * background[:, None]).sum() / batch_size
        attention_loss = (
            (channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()
        ) / batch_size
        global_loss = (adapter.context_student(student) - adapter.context_teacher(teacher)).pow(
            2
        ).sum() / batch_size
        loss = (
            cfg.alpha * fg_loss + cfg.beta * bg_loss + cfg.gamma * attention_loss + cfg.lambda_ * global_loss
        )
        diagnostics = {"fg": fg_loss.detach(), "bg": bg_loss.detach(), "global": global_loss.detach()}
        return loss, diagnostics | {"cos": teacher_cosine(student, teacher, batch, self.teacher_key)}
