"""LSM crop search (``find_clusters``): where the dense clusters of objects are, from a heatmap.

class-max heatmap -> threshold -> foreground density on a grid of cells -> the densest cells (with
at least ``min_density``) -> 8-connected merge into rectangles (the foreground they hold) -> the
largest ``max_patches`` -> drop those smaller than ``min_patch_size`` -> enlarge around their center
-> clamp to the image. Coordinates are image pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkd_ray.heads.yolc.config import LSMConfig

Crop = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels


def find_clusters(
    heatmap_KHW: torch.Tensor,
    image_hw: tuple[int, int],
    stride: int,
    cfg: LSMConfig,
    max_patches: int,
    min_patch_size: int,
) -> list[Crop]:
    """Crops around the dense object clusters of one image; ``heatmap_KHW`` holds probabilities."""
    foreground = heatmap_KHW.detach().float().amax(dim=0) >= cfg.score_threshold
    density = F.avg_pool2d(foreground[None, None].float(), cfg.cell, cfg.cell, ceil_mode=True)[0, 0]
    ranked = torch.argsort(density.flatten(), descending=True)[: cfg.top_cells]
    chosen = {divmod(int(i), density.shape[1]) for i in ranked if density.flatten()[i] >= cfg.min_density}
    clusters = []
    for cells in _connected(chosen):
        mask = torch.zeros_like(foreground)
        for row, col in cells:
            mask[row * cfg.cell : (row + 1) * cfg.cell, col * cfg.cell : (col + 1) * cfg.cell] = True
        ys, xs = torch.nonzero(foreground & mask, as_tuple=True)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        clusters.append((len(xs), tuple(v * stride for v in box)))
    clusters.sort(key=lambda c: c[0], reverse=True)
    crops = []
    for _, (x1, y1, x2, y2) in clusters[:max_patches]:
        if min(x2 - x1, y2 - y1) < min_patch_size:
            continue
        crops.append(_enlarge_and_clamp((x1, y1, x2, y2), cfg.enlarge, image_hw))
    return crops


def _connected(cells: set[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """8-connected components of a set of grid cells."""
    remaining, components = set(cells), []
    while remaining:
        stack, component = [remaining.pop()], []
        while stack:
            row, col = stack.pop()
            component.append((row, col))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    neighbour = (row + dr, col + dc)
                    if neighbour in remaining:
                        remaining.remove(neighbour)
                        stack.append(neighbour)
        components.append(component)
    return components


def _enlarge_and_clamp(box: Crop, factor: float, image_hw: tuple[int, int]) -> Crop:
    x1, y1, x2, y2 = box
    cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * factor / 2, (y2 - y1) * factor / 2
    height, width = image_hw
    return (
        max(0.0, cx - half_w),
        max(0.0, cy - half_h),
        min(float(width), cx + half_w),
        min(float(height), cy + half_h),
    )
