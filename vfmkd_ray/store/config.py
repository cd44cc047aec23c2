"""Config of the teacher feature store and of the precompute job that fills it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    num_teacher_actors: int = Field(1, ge=1)
    augment: Literal["none", "hflip"] = Field(
        "none", description="seeded augmentation the teacher sees; students replay it from aug_seed"
    )
    read_tasks: int = Field(2, ge=1, description="parallel image decode tasks during precompute")
