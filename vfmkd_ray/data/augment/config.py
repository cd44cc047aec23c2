"""Config of the training-time augmentation pipeline (``data.augment``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vfmkd_ray.schema import StrictModel


def mosaic_epoch(epoch: int, epochs: int, close_mosaic_epochs: int) -> bool:
    """Whether epoch ``epoch`` (0-based) of ``epochs`` is before the last ``close_mosaic_epochs``."""
    return epoch < epochs - close_mosaic_epochs


class AugmentConfig(StrictModel):
    """Which pipeline makes each training sample; validation is never augmented."""

    pipeline: Literal["none", "yolov8"] = Field(
        "none",
        description="none: the letterboxed image (with store.augment's flip); yolov8: MMYOLO's YOLOv8 "
        "pipeline for the student's size (Mosaic, RandomAffine, Albu, HSV, flip; MixUp for m/l/x; a "
        "student without a YOLOv8 size, timm or mm, gets the s recipe), mosaic partners from the rows of "
        "the same block (a teacher's stored views bring their own, from the whole training split)",
    )
    close_mosaic_epochs: int = Field(
        10, ge=0, description="the last epochs train on the letterboxed image with the affine (MMYOLO: 10)"
    )

    view_photometric: Literal["replay", "redraw"] = Field(
        "replay",
        description="under a teacher's stored views (under_augmentation views): replay, the student's "
        "pixels are exactly the teacher's canvas; redraw, the view's geometry with its Albu and HSV "
        "draws replaced by a fresh draw per epoch, on the student's pixels only",
    )

    def mosaic_at(self, epoch: int, epochs: int) -> bool:
        """Whether epoch ``epoch`` (0-based) of ``epochs`` trains on mosaics."""
        return self.pipeline != "none" and mosaic_epoch(epoch, epochs, self.close_mosaic_epochs)
