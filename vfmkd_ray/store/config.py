"""Config of the teacher feature store and of the precompute job that fills it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vfmkd_ray.schema import StrictModel


class StoreConfig(StrictModel):
    """Where features live and how the precompute job writes them.

    The dataset for one teacher and input size lives at ``<root>/<teacher>/<input_size>/``.
    """

    root: str = "outputs/demo/store"
    codec: Literal["fp16", "bf16", "int8"] = "fp16"
    rows_per_part: int = Field(
        64,
        ge=1,
        description="each part is a read+decode task per epoch pass; fewer, larger parts cost less "
        "(benchmarks/results.md: 0.91 of the plain loop at 64 rows, 0.61 at 16)",
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
        description="augmented views stored per image (seeds from the image id and the view): epoch e "
        "trains on view e mod K; the store grows K-fold",
    )
    augment: Literal["none", "hflip"] = Field(
        "none", description="seeded augmentation the teacher sees; students replay it from aug_seed"
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
                "set store.augment (hflip) or views_per_image 1"
            )
        return self

    def teacher_actor_bounds(self) -> tuple[int, int]:
        value = self.num_teacher_actors
        return (value, value) if isinstance(value, int) else value
