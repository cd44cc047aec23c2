"""A record replayed into the sample it describes: the same pixels and targets every time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vfmkd_ray.data.augment.geometry import affine, hflip, letterbox_stage, mosaic
from vfmkd_ray.data.augment.photometric import albu, hsv
from vfmkd_ray.data.augment.recipe import AugmentSpec
from vfmkd_ray.data.augment.record import AugmentRecord


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # H x W x 3 uint8
    boxes: np.ndarray  # N x 4 float32, x1 y1 x2 y2 pixels
    labels: np.ndarray  # N int64


Load = Callable[[str], Sample]  # an image id -> its decoded image and original-pixel targets


def replay(record: AugmentRecord, load: Load, spec: AugmentSpec) -> Sample:
    """Mosaic (or the letterbox of the last epochs) -> affine with its box filter -> MixUp (with
    another sample's mosaic and affine only, as MMYOLO's YOLOv5MixUp) -> Albu -> HSV -> flip,
    MMYOLO's order."""
    image, boxes, labels = _geometry(record, load, spec)
    if record.mixup_with is not None:
        other_image, other_boxes, other_labels = _geometry(record.mixup_with, load, spec)
        mixed = image.astype(np.float32) * record.mixup_ratio + other_image * (1.0 - record.mixup_ratio)
        image = mixed.astype(np.uint8)
        boxes, labels = np.concatenate([boxes, other_boxes]), np.concatenate([labels, other_labels])
    image = hsv(albu(image, record), record.hsv_gains)
    if record.flip:
        image, boxes = hflip(image, boxes)
    return Sample(np.ascontiguousarray(image), boxes.astype(np.float32), labels)


def _geometry(
    record: AugmentRecord, load: Load, spec: AugmentSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mosaic (or letterbox) and the affine of ``record``: pixels, kept boxes, their labels."""
    size = record.size
    if record.mosaic:
        tiles = [load(image_id) for image_id in (record.image_id, *record.partners)]
        canvas, moved = mosaic([(t.image, t.boxes) for t in tiles], size, record.center)
        boxes = np.concatenate(moved).reshape(-1, 4)
        labels = np.concatenate([t.labels for t in tiles]).astype(np.int64)
    else:
        sample = load(record.image_id)
        canvas, boxes = letterbox_stage(sample.image, sample.boxes.reshape(-1, 4), size)
        labels = sample.labels.astype(np.int64)
    image, boxes, keep = affine(canvas, boxes, record.matrix, size, record.scale, spec)
    return image, boxes[keep], labels[keep]
