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

    @property
    def label(self) -> str:
        """How messages name the student: ``timm/hgnetv2_b4``, ``yolov8_cspdarknet-n``."""
        return self.name if self.name.startswith("timm/") else f"{self.name}-{self.size}"
