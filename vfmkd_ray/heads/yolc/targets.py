"""Training targets at stride 4: per-class Gaussian center heatmaps and the encoded box at each
object's center cell."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vfmkd_ray.heads.yolc.boxes import encode

MIN_SIGMA = 0.5  # grid cells; tiny objects still get a peak wider than one cell


@dataclass
class DetectionTargets:
    heatmap_BKHW: torch.Tensor  # 1 at object centers, Gaussian around them
    boxes_B4HW: torch.Tensor  # encoded box at positive cells, 0 elsewhere
    gt_boxes_B4HW: torch.Tensor  # the object's pixel box at positive cells
    positive_B1HW: torch.Tensor  # 1 at the center cell of an object


def build_targets(
    boxes_BN4: torch.Tensor, labels_BN: torch.Tensor, num_classes: int, grid: tuple[int, int], stride: int
) -> DetectionTargets:
    """``labels`` < 0 mark padding. When two objects share a center cell, the later one's box wins
    the cell (the heatmap keeps both peaks)."""
    batch = boxes_BN4.shape[0]
    height, width = grid
    device = boxes_BN4.device
    heatmap = torch.zeros(batch, num_classes, height, width, device=device)
    box_map = torch.zeros(batch, 4, height, width, device=device)
    gt_map = torch.zeros(batch, 4, height, width, device=device)
    positive = torch.zeros(batch, 1, height, width, device=device)
    ys = torch.arange(height, device=device, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(width, device=device, dtype=torch.float32).view(1, -1)
    for b in range(batch):
        valid = labels_BN[b] >= 0
        boxes, labels = boxes_BN4[b][valid].float(), labels_BN[b][valid].long()
        if not len(boxes):
            continue
        centers = (
            torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1) / stride
        )
        cells = centers.floor().long()
        cells[:, 0].clamp_(0, width - 1)
        cells[:, 1].clamp_(0, height - 1)
        sizes = (boxes[:, 2:] - boxes[:, :2]) / stride
        sigmas = (sizes.max(dim=1).values / 6).clamp_min(MIN_SIGMA)
        codes = encode(boxes, cells, stride)
        for k in range(len(boxes)):
            i, j = int(cells[k, 0]), int(cells[k, 1])
            gaussian = torch.exp(-((xs - i) ** 2 + (ys - j) ** 2) / (2 * sigmas[k] ** 2))
            heatmap[b, labels[k]] = torch.maximum(heatmap[b, labels[k]], gaussian)
            box_map[b, :, j, i] = codes[k]
            gt_map[b, :, j, i] = boxes[k]
            positive[b, 0, j, i] = 1.0
    return DetectionTargets(heatmap, box_map, gt_map, positive)
