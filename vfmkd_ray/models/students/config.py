"""Config of the student backbone."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from vfmkd_ray.models.students.family import StudentFamily, family_of
from vfmkd_ray.schema import StrictModel


class StudentConfig(StrictModel):
    """A registered student (``yolov8_cspdarknet``), any timm model as ``timm/<name>``, or any
    OpenMMLab registry backbone as ``mm/<scope>.<Type>`` with its dict in ``mm``; its family
    (``family.family_of``) says what the name means."""

    name: str = Field(
        "yolov8_cspdarknet",
        description="the backbone: yolov8_cspdarknet, a timm model name, or mm/<scope>.<Type>",
    )
    size: Literal["n", "s", "m", "l", "x"] = Field(
        "n", description="the size of a family that has sizes (yolov8_cspdarknet: n to x)"
    )
    out_indices: tuple[int, ...] | None = None
    weights: str | None = Field(None, description="initial backbone weights: a path or s3:// URI")
    sha256: str | None = Field(None, description="their sha256, checked before they load")
    # The backbone dict as MMDetection/MMYOLO configs write it, less its type (which the name
    # carries), e.g. {depth: 18, out_indices: [0, 1, 2, 3]} for mm/mmdet.ResNet.
    mm: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _fields_fit_the_family(self) -> StudentConfig:
        self.family.check(self)
        return self

    @property
    def family(self) -> StudentFamily:
        return family_of(self.name)

    @property
    def label(self) -> str:
        """How messages name the student: ``timm/hgnetv2_b4``, ``yolov8_cspdarknet-n``,
        ``mm/mmdet.ResNet``."""
        return self.family.label(self)

    @property
    def timm_name(self) -> str | None:
        """``hgnetv2_b4`` for ``timm/hgnetv2_b4``; None for a student of another family."""
        return self.family.timm_name(self)

    @property
    def registry_type(self) -> str | None:
        """``mmdet.ResNet`` for ``mm/mmdet.ResNet``; None for a student of another family."""
        return self.family.registry_type(self)
