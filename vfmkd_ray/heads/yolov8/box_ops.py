"""Box helpers of the YOLOv8 head: point priors, distance encoding and CIoU, as MMYOLO 0.6.0 has them.

- ``grid_priors``: mmdet's ``MlvlPointGenerator`` with ``offset=0.5``: one point per grid cell at
  ``((j + 0.5) * stride, (i + 0.5) * stride)``, row-major per level, levels concatenated.
- ``distance_to_box`` / ``box_to_distance``: mmdet's ``distance2bbox`` / ``bbox2distance`` as used by
  MMYOLO's ``DistancePointBBoxCoder`` (distances left, top, right, bottom).
- ``ciou``: MMYOLO's ``bbox_overlaps(iou_mode='ciou', bbox_format='xyxy')``
  (``mmyolo/models/losses/iou_loss.py``; Zheng et al., "Enhancing Geometric Factors in Model
  Learning and Inference for Object Detection and Instance Segmentation", 2021), with YOLOv5's
  ``alpha = v / (v - iou + 1 + eps)`` computed without gradient.

Legend: P priors (all levels), B images, ``...`` any leading batch dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

PRIOR_OFFSET = 0.5  # mmdet MlvlPointGenerator(offset=0.5) in MMYOLO's YOLOv8 config
CIOU_EPS = 1e-7  # bbox_overlaps' and IoULoss's default eps


def grid_priors(
    grid_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Point priors of every level.

    Args:
        grid_sizes: ``(h, w)`` of each level.
        strides: stride of each level, in input pixels.
        device: where the priors live.
        dtype: their dtype.

    Returns:
        ``P x 3``: ``x, y`` of each prior in input pixels and its level's stride.
    """
    parts = []
    for (h, w), stride in zip(grid_sizes, strides, strict=True):
        xs = (torch.arange(w, device=device, dtype=dtype) + PRIOR_OFFSET) * stride
        ys = (torch.arange(h, device=device, dtype=dtype) + PRIOR_OFFSET) * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        stride_col = torch.full_like(xx, float(stride))
        parts.append(torch.stack([xx.reshape(-1), yy.reshape(-1), stride_col.reshape(-1)], dim=-1))
    return torch.cat(parts, dim=0)


def distance_to_box(points_P2: torch.Tensor, distances_4: torch.Tensor) -> torch.Tensor:
    """``x1, y1, x2, y2`` from a point and its distances (left, top, right, bottom); broadcasts."""
    return torch.cat([points_P2 - distances_4[..., :2], points_P2 + distances_4[..., 2:]], dim=-1)


def box_to_distance(
    points_P2: torch.Tensor, boxes_4: torch.Tensor, max_distance: float, eps: float = 0.01
) -> torch.Tensor:
    """Distances (left, top, right, bottom) from a point to a box's sides, clamped to
    ``[0, max_distance - eps]`` so that the upper DFL bin index stays inside the distribution."""
    distances = torch.cat([points_P2 - boxes_4[..., :2], boxes_4[..., 2:] - points_P2], dim=-1)
    return distances.clamp(min=0, max=max_distance - eps)


def ciou(pred_4: torch.Tensor, target_4: torch.Tensor, eps: float = CIOU_EPS) -> torch.Tensor:
    """Complete IoU of ``x1, y1, x2, y2`` boxes, elementwise over broadcast leading dimensions.

    Args:
        pred_4: ``... x 4`` predicted boxes.
        target_4: ``... x 4`` target boxes.
        eps: keeps divisions finite (MMYOLO adds it to the union, the heights and the enclosing
            diagonal).

    Returns:
        ``...`` CIoU in ``[-1, 1]``.
    """
    px1, py1, px2, py2 = pred_4.unbind(-1)
    tx1, ty1, tx2, ty2 = target_4.unbind(-1)
    overlap = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(0) * (
        torch.min(py2, ty2) - torch.max(py1, ty1)
    ).clamp(0)
    pw, ph = px2 - px1, py2 - py1
    tw, th = tx2 - tx1, ty2 - ty1
    iou = overlap / (pw * ph + tw * th - overlap + eps)
    # Squared diagonal of the smallest enclosing box.
    enclose_w = (torch.max(px2, tx2) - torch.min(px1, tx1)).clamp(min=0)
    enclose_h = (torch.max(py2, ty2) - torch.min(py1, ty1)).clamp(min=0)
    diagonal2 = enclose_w**2 + enclose_h**2 + eps
    # Squared distance of the centres (the sums are twice the centres, hence / 4).
    center2 = ((tx1 + tx2) - (px1 + px2)) ** 2 / 4 + ((ty1 + ty2) - (py1 + py2)) ** 2 / 4
    # Aspect-ratio consistency v; MMYOLO adds eps to the heights only here.
    v = (4 / math.pi**2) * (torch.atan(tw / (th + eps)) - torch.atan(pw / (ph + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return (iou - (center2 / diagonal2 + alpha * v)).clamp(min=-1.0, max=1.0)
