"""Ground truth in the student's frame: one image's annotations -> fixed-size arrays for batching.

The image is mirrored (when its ``aug_seed`` says so, ``images.is_flipped``) before it is
letterboxed, so boxes and masks are mirrored in original pixels first, then scaled by the letterbox
factor. Boxes are padded to ``max_objects`` rows with label -1. Instance masks (COCO polygons or
RLE, decoded by pycocotools) are kept for up to ``max_masks`` instances, a seeded sample when an
image has more, at ``batch.MASK_STRIDE``, each with the row of its box. A mask that cannot be
decoded to the image's size (the reader checks what it can without decoding:
``data.annotation_checks``) raises ``BadAnnotationError`` naming the image and annotation, which
the data stages treat as a bad sample.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vfmkd_ray.data.annotation_checks import BadAnnotationError, far_polygon_problem
from vfmkd_ray.data.coco import ImageAnnotations

MASK_STRIDE = 4  # equals vfmkd_ray.batch.MASK_STRIDE (kept apart: this module must not import torch)
BOXES_COLUMN, LABELS_COLUMN = "boxes", "labels"
MASKS_COLUMN, MASK_BOX_COLUMN = "masks", "mask_box"


def letterboxed_targets(
    annotations: ImageAnnotations,
    original_hw: tuple[int, int],
    valid_hw: tuple[int, int],
    input_size: int,
    flipped: bool,
    max_objects: int,
    max_masks: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """The columns ``boxes`` / ``labels`` and, when ``max_masks``, ``masks`` / ``mask_box`` of one
    sample (``max_objects`` > 0)."""
    width = original_hw[1]
    scale = valid_hw[1] / max(1, width)
    boxes_N4 = np.asarray(annotations.boxes, np.float32).reshape(-1, 4)
    if flipped:
        boxes_N4 = np.stack(
            [width - boxes_N4[:, 2], boxes_N4[:, 1], width - boxes_N4[:, 0], boxes_N4[:, 3]], 1
        )
    if max_masks and not max_objects:
        raise ValueError("instance masks need their boxes: max_objects must be positive with max_masks")
    rows = _kept_boxes(boxes_N4, max_objects)
    out = padded_targets(boxes_N4[rows] * scale, np.asarray(annotations.labels, np.int64)[rows], max_objects)
    if max_masks:
        out |= _masks(annotations, rows, original_hw, valid_hw, input_size, flipped, max_masks, seed)
    return out


def padded_targets(boxes_K4: np.ndarray, labels_K: np.ndarray, max_objects: int) -> dict[str, np.ndarray]:
    """The ``boxes`` / ``labels`` columns: the first ``max_objects`` of them, padded with zero boxes
    labelled -1."""
    count = min(len(boxes_K4), max_objects)
    boxes = np.zeros((max_objects, 4), np.float32)
    labels = np.full(max_objects, -1, np.int64)
    boxes[:count], labels[:count] = boxes_K4[:count], labels_K[:count]
    return {BOXES_COLUMN: boxes, LABELS_COLUMN: labels}


def positive_area(boxes_N4: np.ndarray) -> np.ndarray:
    """Which ``x1 y1 x2 y2`` boxes have a positive area (the others are dropped as degenerate)."""
    return (boxes_N4[:, 2] > boxes_N4[:, 0]) & (boxes_N4[:, 3] > boxes_N4[:, 1])


def kept_instances(annotations: ImageAnnotations, max_objects: int) -> list[int]:
    """The annotation indices behind the rows of the padded boxes column, in row order: instances
    with a positive area, in annotation order, at most ``max_objects``."""
    return _kept_boxes(np.asarray(annotations.boxes, np.float32).reshape(-1, 4), max_objects).tolist()


def _kept_boxes(boxes_N4: np.ndarray, limit: int) -> np.ndarray:
    """Rows with a positive area, in annotation order, at most ``limit`` (mirroring keeps areas)."""
    return np.flatnonzero(positive_area(boxes_N4))[:limit]


def _masks(
    annotations: ImageAnnotations,
    rows: np.ndarray,
    original_hw: tuple[int, int],
    valid_hw: tuple[int, int],
    input_size: int,
    flipped: bool,
    max_masks: int,
    seed: int,
) -> dict[str, np.ndarray]:
    grid = input_size // MASK_STRIDE
    masks = np.zeros((max_masks, grid, grid), np.uint8)
    mask_box = np.full(max_masks, -1, np.int64)
    with_mask = [p for p, row in enumerate(rows) if annotations.segmentations[row] is not None]
    if len(with_mask) > max_masks:
        with_mask = sorted(np.random.default_rng(seed).choice(with_mask, max_masks, replace=False).tolist())
    mask_hw = (max(1, round(valid_hw[0] / MASK_STRIDE)), max(1, round(valid_hw[1] / MASK_STRIDE)))
    for slot, position in enumerate(with_mask):
        full_HW = _instance_mask(annotations, int(rows[position]), original_hw)
        if flipped:
            full_HW = full_HW[:, ::-1]
        masks[slot, : mask_hw[0], : mask_hw[1]] = _resize_mask(full_HW, mask_hw)
        mask_box[slot] = position  # the row of this instance in the padded boxes column
    return {MASKS_COLUMN: masks, MASK_BOX_COLUMN: mask_box}


def _instance_mask(annotations: ImageAnnotations, index: int, original_hw: tuple[int, int]) -> np.ndarray:
    """Instance ``index``'s mask at the image's size, or ``BadAnnotationError`` naming it."""
    name = f"image {annotations.image_id or '?'}, annotation {annotations.annotation_id(index)}"
    segmentation = annotations.segmentations[index]
    # Before pycocotools: it rasterizes a polygon edge point by point, however far it reaches.
    if isinstance(segmentation, list) and (problem := far_polygon_problem(segmentation, *original_hw)):
        raise BadAnnotationError(f"{name}: {problem}")
    try:
        mask_HW = decode_segmentation(segmentation, original_hw)
    # pycocotools raises ValueError, TypeError or a bare Exception on malformed input.
    except Exception as err:
        raise BadAnnotationError(f"{name}: cannot decode its segmentation: {err}") from None
    if mask_HW.shape != tuple(original_hw):
        raise BadAnnotationError(
            f"{name}: its segmentation decodes to {mask_HW.shape[0]}x{mask_HW.shape[1]} (height x width) "
            f"but the image is {original_hw[0]}x{original_hw[1]}"
        )
    return mask_HW


def decode_segmentation(segmentation: object, original_hw: tuple[int, int]) -> np.ndarray:
    """A COCO polygon list or RLE (compressed or not) as an ``H x W`` 0/1 uint8 mask."""
    from pycocotools import mask as mask_utils

    height, width = original_hw
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation, counts=str(segmentation["counts"]).encode())
    else:
        raise ValueError(f"segmentation of type {type(segmentation).__name__} is neither polygons nor RLE")
    return np.asarray(mask_utils.decode(rle), np.uint8)


def _resize_mask(mask_HW: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-weighted resize of a 0/1 mask, thresholded at one half."""
    image = Image.fromarray(np.ascontiguousarray(mask_HW) * 255)
    resized = np.asarray(image.resize((size_hw[1], size_hw[0]), Image.BILINEAR))
    return (resized >= 128).astype(np.uint8)
