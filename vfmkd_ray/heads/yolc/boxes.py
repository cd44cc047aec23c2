"""The one box encoding of the detector and its inverse, and the crop remap.

A box map holds, at every stride-``s`` grid point ``p = ((i + 0.5) s, (j + 0.5) s)``, four values
in grid units: ``(dx, dy, w/2, h/2)`` with the box center at ``p + s (dx, dy)``. ``decode`` turns a
map into ``x1, y1, x2, y2`` image coordinates; the losses, the KD terms and inference all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def grid_centers(height: int, width: int, stride: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates of the grid points, each ``H x W``."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    return torch.meshgrid(ys, xs, indexing="ij")[::-1]  # (x, y)


def decode(box_map_B4HW: torch.Tensor, stride: int) -> torch.Tensor:
    """``B x 4 x H x W`` encoded map -> ``B x 4 x H x W`` boxes ``(x1, y1, x2, y2)`` in pixels."""
    height, width = box_map_B4HW.shape[-2:]
    px, py = grid_centers(height, width, stride, box_map_B4HW.device)
    dx, dy, half_w, half_h = (box_map_B4HW[:, k] * stride for k in range(4))
    cx, cy = px + dx, py + dy
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)


def encode(boxes_N4: torch.Tensor, cells_N2: torch.Tensor, stride: int) -> torch.Tensor:
    """Boxes ``(x1, y1, x2, y2)`` relative to grid cells ``(i, j)`` (column, row) -> ``N x 4`` codes."""
    cx = (boxes_N4[:, 0] + boxes_N4[:, 2]) / 2
    cy = (boxes_N4[:, 1] + boxes_N4[:, 3]) / 2
    px = (cells_N2[:, 0].float() + 0.5) * stride
    py = (cells_N2[:, 1].float() + 0.5) * stride
    half_w = (boxes_N4[:, 2] - boxes_N4[:, 0]) / 2
    half_h = (boxes_N4[:, 3] - boxes_N4[:, 1]) / 2
    return torch.stack([(cx - px) / stride, (cy - py) / stride, half_w / stride, half_h / stride], dim=1)


@dataclass(frozen=True)
class CropMeta:
    """Where a zoomed crop came from: patch pixel ``(u, v)`` is image pixel
    ``(x0 + u / scale_x, y0 + v / scale_y)``."""

    image_index: int
    x0: float
    y0: float
    scale_x: float
    scale_y: float
    width: int  # of the resized crop inside the patch canvas
    height: int


def to_patch(boxes_N4: torch.Tensor, meta: CropMeta) -> torch.Tensor:
    scale = boxes_N4.new_tensor([meta.scale_x, meta.scale_y, meta.scale_x, meta.scale_y])
    offset = boxes_N4.new_tensor([meta.x0, meta.y0, meta.x0, meta.y0])
    return (boxes_N4 - offset) * scale


def remap(boxes_N4: torch.Tensor, meta: CropMeta) -> torch.Tensor:
    """Patch boxes back to image coordinates: undo the zoom, add the crop offset."""
    scale = boxes_N4.new_tensor([meta.scale_x, meta.scale_y, meta.scale_x, meta.scale_y])
    offset = boxes_N4.new_tensor([meta.x0, meta.y0, meta.x0, meta.y0])
    return boxes_N4 / scale + offset
