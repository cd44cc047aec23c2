"""One block of training rows through the augmentation pipeline, as the decode stage makes samples:
each row's image decoded once (its tiles in the other rows' mosaics are the same decoded images), a
record drawn per row with its partners among the block's rows, and the replay's pixels and padded
targets as the stage's columns. MMYOLO draws partners from the whole dataset; here a block is
``store.rows_per_part`` image rows regrouped from the whole split every epoch (``data.shuffle``:
``data.ordered_blocks.RegroupedRows``), so over the epochs an image meets the whole split."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vfmkd_ray.data.augment.recipe import AugmentSpec, yolov8_recipe, yolov8_spec
from vfmkd_ray.data.augment.record import AugmentRecord, DrawContext, draw_record
from vfmkd_ray.data.augment.replay import Sample, replay
from vfmkd_ray.data.coco import ImageAnnotations
from vfmkd_ray.data.samples import IMAGE_COLUMN, VALID_HW_COLUMN
from vfmkd_ray.data.targets import padded_targets, positive_area


@dataclass(frozen=True)
class BlockAugmentation:
    spec: AugmentSpec
    seed: int
    epochs: int
    size: int  # the student's input side
    max_objects: int  # rows of the padded boxes column (0: the heads read no boxes)
    view_photometric: str = "replay"  # a stored view's photometric draws: replay or redraw

    @staticmethod
    def yolov8(
        student_size: str,
        close_mosaic_epochs: int,
        seed: int,
        epochs: int,
        size: int,
        max_objects: int,
        view_photometric: str = "replay",
    ) -> BlockAugmentation:
        spec = yolov8_spec(yolov8_recipe(student_size), close_mosaic_epochs)
        return BlockAugmentation(spec, seed, epochs, size, max_objects, view_photometric)

    def records(self, epoch: int, ids: list[str]) -> list[AugmentRecord]:
        context = DrawContext(self.seed, epoch, self.epochs, self.size)
        return [draw_record(self.spec, context, image_id, ids) for image_id in ids]

    def view_record(self, stored: AugmentRecord, epoch: int) -> AugmentRecord:
        """The record a stored view trains with in epoch ``epoch``: at the student's size, its
        photometric draws replayed, or replaced by the epoch's own (``view_photometric: redraw``)."""
        record = stored.at_size(self.size)
        return self.with_fresh_photometric(record, epoch) if self.view_photometric == "redraw" else record

    def with_fresh_photometric(self, record: AugmentRecord, epoch: int) -> AugmentRecord:
        """``record`` with the Albu and HSV draws of epoch ``epoch`` of its image instead of its own
        (a stored view's geometry under ``data.augment.view_photometric: redraw``)."""
        context = DrawContext(self.seed, epoch, self.epochs, record.size, salt="photometric")
        fresh = draw_record(self.spec, context, record.image_id, (record.image_id,), mixup=False)
        return replace(
            record,
            blur=fresh.blur,
            median_blur=fresh.median_blur,
            gray=fresh.gray,
            equalize=fresh.equalize,
            hsv_gains=fresh.hsv_gains,
        )

    def columns(self, record: AugmentRecord, decoded: dict[str, Sample]) -> dict[str, np.ndarray]:
        """The sample ``record`` describes: a ``3 x S x S`` image whose whole canvas is valid, and
        its boxes and labels padded to ``max_objects`` (label -1)."""
        out = replay(record, decoded.__getitem__, self.spec)
        columns = {
            IMAGE_COLUMN: np.ascontiguousarray(out.image.transpose(2, 0, 1)),
            VALID_HW_COLUMN: np.array([self.size, self.size], np.int32),
        }
        if self.max_objects:
            columns |= padded_targets(out.boxes, out.labels, self.max_objects)
        return columns


def decoded_sample(image: np.ndarray, annotations: ImageAnnotations | None) -> Sample:
    """An image and its boxes with a positive area, in original pixels."""
    boxes = np.asarray(annotations.boxes if annotations else [], np.float32).reshape(-1, 4)
    labels = np.asarray(annotations.labels if annotations else [], np.int64)
    valid = positive_area(boxes)
    return Sample(image, boxes[valid], labels[valid])
