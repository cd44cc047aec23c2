"""Config of the student backbone."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from vfmkd_ray.schema import StrictModel

MM_PREFIX = "mm/"
TIMM_PREFIX = "timm/"


class StudentConfig(StrictModel):
    """A registered student (``yolov8_cspdarknet``), any timm model as ``timm/<name>``, or any
    OpenMMLab registry backbone as ``mm/<scope>.<Type>`` with its dict in ``mm``."""

    name: str = "yolov8_cspdarknet"
    size: Literal["n", "s", "m", "l", "x"] = "n"
    out_indices: tuple[int, ...] | None = None
    weights: str | None = None
    sha256: str | None = None
    # The backbone dict as MMDetection/MMYOLO configs write it, less its type (which the name
    # carries), e.g. {depth: 18, out_indices: [0, 1, 2, 3]} for mm/mmdet.ResNet.
    mm: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _mm_fields_fit_the_name(self) -> StudentConfig:
        if not self.is_mm:
            if self.mm is not None:
                raise ValueError(
                    f"student.mm is the backbone dict of an mm/<scope>.<Type> student, not {self.name}"
                )
            return self
        given = (self.mm or {}).get("type")
        if given is not None and given != self.mm_type:
            raise ValueError(f"student.mm.type {given!r} differs from student.name {self.name!r}; drop one")
        for key in ("init_cfg", "pretrained"):
            if (self.mm or {}).get(key):
                raise ValueError(
                    f"student.mm.{key} would load weights from where the class says (nothing is downloaded "
                    "at run time): give them as student.weights, a path or s3:// URI (with student.sha256)"
                )
        if self.out_indices is not None:
            raise ValueError("an mm/ student takes its outputs from student.mm (e.g. out_indices there)")
        return self

    @property
    def is_mm(self) -> bool:
        return self.name.startswith(MM_PREFIX)

    @property
    def mm_type(self) -> str:
        """The registry type of an ``mm/`` student: ``mm/mmdet.ResNet`` -> ``mmdet.ResNet``."""
        return self.name.removeprefix(MM_PREFIX)

    @property
    def label(self) -> str:
        """How messages name the student: ``timm/hgnetv2_b4``, ``yolov8_cspdarknet-n``,
        ``mm/mmdet.ResNet``."""
        return self.name if self.name.startswith((TIMM_PREFIX, MM_PREFIX)) else f"{self.name}-{self.size}"
