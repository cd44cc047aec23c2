"""Config of the teacher feature store and of the precompute job that fills it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vfmkd_ray.schema import StrictModel


class StoreConfig(StrictModel):
    """Where features live and how the precompute job writes them.

    The dataset for one teacher and input size lives at ``<root>/<teacher>/<input_size>/``.
    """

    root: str = Field(
        "outputs/demo/store",
        description="where feature stores live: <root>/<teacher>/<input_size>/, local or s3://",
    )
    codec: Literal["fp16", "bf16", "int8"] = Field(
        "fp16", description="how feature values are stored (int8: per-channel scales, half fp16's bytes)"
    )
    rows_per_part: int = Field(
        64,
        ge=1,
        description="each part is a read+decode task per epoch pass; fewer, larger parts cost less "
        "(benchmarks/results.md: 0.94 of the plain loop at 64 rows, 0.61 at 16)",
    )
    teacher_batch_size: int = Field(8, ge=1)
    num_teacher_actors: int | tuple[int, int] = Field(
        1,
        description="teacher actors (one GPU each on GPU nodes): a count, or [min, max] for a pool "
        "that grows while images wait and nodes have room",
    )
    views_per_image: int = Field(
        1,
        ge=1,
        description="views stored per image, a row each (the store grows K-fold). augment hflip: "
        "seeded flips, epoch e trains on view e mod K; augment yolov8: view 0 is the plain image and "
        "views 1..K-1 (of the training images) are canvases of the yolov8 pipeline, trained on in turn "
        "by the mosaic epochs",
    )
    augment: Literal["none", "hflip", "yolov8"] = Field(
        "none",
        description="what the teacher sees per view: none, the letterboxed image; hflip, a seeded "
        "flip the student replays from aug_seed; yolov8, canvases of data.augment's yolov8 pipeline "
        "for the student's size (mosaic partners from the training split), each stored with its "
        "record, for teachers.<alias>.under_augmentation views",
    )
    read_tasks: int = Field(2, ge=1, description="parallel image decode tasks during precompute")

    @field_validator("num_teacher_actors")
    @classmethod
    def _actor_bounds(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        low, high = (value, value) if isinstance(value, int) else value
        if not 1 <= low <= high:
            raise ValueError(
                f"num_teacher_actors must be >= 1, or [min, max] with 1 <= min <= max; got {value}"
            )
        return value

    @model_validator(mode="after")
    def _views_differ(self) -> StoreConfig:
        if self.views_per_image > 1 and self.augment == "none":
            raise ValueError(
                f"views_per_image {self.views_per_image} with augment none stores identical views: "
                "set store.augment (hflip, yolov8) or views_per_image 1"
            )
        if self.augment == "yolov8" and self.views_per_image < 2:
            raise ValueError(
                "store.augment yolov8 stores the plain view 0 and the augmented views 1..K-1: set "
                f"store.views_per_image to 2 or more (got {self.views_per_image})"
            )
        return self

    def teacher_actor_bounds(self) -> tuple[int, int]:
        value = self.num_teacher_actors
        return (value, value) if isinstance(value, int) else value
