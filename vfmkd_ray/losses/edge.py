"""Edge boost: an edge head on a fine student level learns the Sobel edges of the input image.

A cheap, teacher-free signal that keeps the high-resolution levels sharp (the seed design's
"edge boost"); the target is the per-image-normalised gradient magnitude pooled to the level's grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vfmkd_ray.batch import Batch
from vfmkd_ray.data.image_tensors import sobel_edges, valid_mask
from vfmkd_ray.losses.base import LossTerm, masked_mean
from vfmkd_ray.models.adapters import EdgeAdapter


class EdgeLoss(LossTerm):
    def build_adapter(self) -> nn.Module:
        return EdgeAdapter(self.in_channels)

    def __call__(self, pred_B1HW: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        grid = tuple(pred_B1HW.shape[-2:])
        target_B1HW = F.adaptive_avg_pool2d(sobel_edges(batch.images_BCHW), grid)
        target_B1HW = target_B1HW / target_B1HW.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        mask_B1HW = valid_mask(batch.valid_hw_B2, batch.image_size, grid)
        bce = F.binary_cross_entropy_with_logits(pred_B1HW.float(), target_B1HW, reduction="none")
        return masked_mean(bce, mask_B1HW), {}
