"""Config of the student backbone."""

from __future__ import annotations

from typing import Literal

from vfmkd_ray.schema import StrictModel


class StudentConfig(StrictModel):
    """A registered student (``yolov8_cspdarknet``) or any timm model as ``timm/<name>``."""

    name: str = "yolov8_cspdarknet"
    size: Literal["n", "s", "m", "l", "x"] = "n"
    out_indices: tuple[int, ...] | None = None
    weights: str | None = None
    sha256: str | None = None
