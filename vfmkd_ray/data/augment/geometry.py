"""The geometric steps of a replay, on ``H x W x 3`` uint8 images and ``N x 4`` ``x1, y1, x2, y2``
pixel boxes: MMYOLO's Mosaic (tiles resized to fit the output size, pasted around a centre on a
2 x size canvas, boxes clipped to it), the letterbox of the last epochs (top-left, as every
letterbox of this product), the affine warp with its box filter, and the horizontal flip. Resize
and warp are OpenCV's bilinear ones, as MMYOLO's (``augment.opencv``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfmkd_ray.data.augment.opencv import cv2
from vfmkd_ray.data.augment.recipe import PAD_VALUE, AugmentSpec


@dataclass(frozen=True)
class Placement:
    """Where one image lands on a mosaic (or letterbox) canvas: resized by ``ratio`` to
    ``resized_hw``, shifted by ``offset`` (canvas = resized + offset), and the part of the canvas it
    covers, ``x1, y1, x2, y2`` (the pixels outside it are padding)."""

    ratio: float
    resized_hw: tuple[int, int]
    offset: tuple[int, int]
    region: tuple[int, int, int, int]


def fit_ratio(height: int, width: int, size: int) -> tuple[float, tuple[int, int]]:
    """MMYOLO's keep-ratio resize to ``size``: the ratio and the resized height and width."""
    ratio = min(size / height, size / width)
    return ratio, (max(1, int(height * ratio)), max(1, int(width * ratio)))


def resize_to_fit(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image with its longer side ``size`` (MMYOLO's keep-ratio resize), and its boxes."""
    ratio, (new_h, new_w) = fit_ratio(*image.shape[:2], size)
    if (new_h, new_w) == image.shape[:2]:
        return image, boxes * np.float32(ratio)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resized, boxes * np.float32(ratio)


def mosaic_placements(tile_hw: list[tuple[int, int]], size: int, center: tuple[int, int]) -> list[Placement]:
    """The placements of four images of original sizes ``tile_hw`` (top-left, top-right,
    bottom-left, bottom-right) around ``center`` on the ``2 size`` mosaic canvas."""
    placements = []
    cx, cy = center
    for corner, (tile_h, tile_w) in enumerate(tile_hw):
        ratio, (height, width) = fit_ratio(tile_h, tile_w, size)
        right, bottom = corner in (1, 3), corner in (2, 3)
        x1 = cx if right else max(cx - width, 0)
        x2 = min(cx + width, 2 * size) if right else cx
        y1 = cy if bottom else max(cy - height, 0)
        y2 = min(cy + height, 2 * size) if bottom else cy
        crop_x = 0 if right else width - (x2 - x1)
        crop_y = 0 if bottom else height - (y2 - y1)
        placements.append(Placement(ratio, (height, width), (x1 - crop_x, y1 - crop_y), (x1, y1, x2, y2)))
    return placements


def letterbox_placement(height: int, width: int, size: int) -> Placement:
    """The placement of the letterbox stage: fitted into ``size`` at the top left."""
    ratio, (new_h, new_w) = fit_ratio(height, width, size)
    return Placement(ratio, (new_h, new_w), (0, 0), (0, 0, new_w, new_h))


def mosaic(
    tiles: list[tuple[np.ndarray, np.ndarray]], size: int, center: tuple[int, int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Four ``(image, boxes)`` tiles (top-left, top-right, bottom-left, bottom-right) on a
    ``2 size`` canvas padded with 114, meeting at ``center``; each tile's boxes moved with it and
    clipped to the canvas (a box outside its tile's pasted part becomes degenerate: the affine's
    filter drops it)."""
    canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, np.uint8)
    moved = []
    placements = mosaic_placements([image.shape[:2] for image, _ in tiles], size, center)
    for (image, boxes), placement in zip(tiles, placements, strict=True):
        image, boxes = resize_to_fit(image, boxes, size)
        x1, y1, x2, y2 = placement.region
        dx, dy = placement.offset
        canvas[y1:y2, x1:x2] = image[y1 - dy : y2 - dy, x1 - dx : x2 - dx]
        moved.append(np.clip(boxes + np.array([dx, dy] * 2, np.float32), 0, 2 * size))
    return canvas, moved


def letterbox_stage(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image fitted into ``size`` x ``size`` at the top left, padded with 114."""
    image, boxes = resize_to_fit(image, boxes, size)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    return canvas, boxes


def affine(
    canvas: np.ndarray,
    boxes: np.ndarray,
    matrix: tuple[float, ...],
    size: int,
    scale: float,
    spec: AugmentSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The canvas warped by the 2 x 3 ``matrix`` into ``size`` x ``size`` (bilinear, border 114),
    the boxes' corners moved by it, boxed and clipped, and which boxes survive MMYOLO's filter:
    both sides above ``min_box_size``, at least ``min_area_ratio`` of their area before the warp
    (at its ``scale``), aspect ratio under ``max_aspect_ratio``."""
    forward = np.array([matrix[:3], matrix[3:], [0.0, 0.0, 1.0]])
    warped = cv2.warpAffine(
        canvas, forward[:2], (size, size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3
    )
    corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 4, 2).astype(np.float64)
    moved = corners @ forward[:2, :2].T + forward[:2, 2]
    out = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1).clip(0, size).astype(np.float32)
    width, height = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    before = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * scale * scale
    aspect = np.maximum(width / (height + 1e-16), height / (width + 1e-16))
    keep = (
        (width > spec.min_box_size)
        & (height > spec.min_box_size)
        & (width * height / (before + 1e-16) > spec.min_area_ratio)
        & (aspect < spec.max_aspect_ratio)
    )
    return warped, out, keep


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), flipped
