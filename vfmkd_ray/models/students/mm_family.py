"""The OpenMMLab student family: any registry backbone as a student, named ``mm/<scope>.<Type>``
with its dict in ``student.mm``.

Light on purpose, as ``timm_family``: resolving and checking a student name imports neither torch
nor the OpenMMLab stack; ``build`` imports the student (``mm_student``) when one is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfmkd_ray.models.students.family import StudentFamily, register_family
from vfmkd_ray.openmmlab import SCOPES

if TYPE_CHECKING:
    from vfmkd_ray.models.students.base import StudentBackbone
    from vfmkd_ray.models.students.config import StudentConfig


class MMFamily(StudentFamily):
    """``mm/<scope>.<Type>`` with ``student.mm``: ``<scope>.<Type>`` is the registry type."""

    name, prefix = "mm", "mm/"
    described_by_name = False

    def check(self, cfg: StudentConfig) -> None:
        mm = cfg.mm or {}
        given = mm.get("type")
        if given is not None and given != self.registry_type(cfg):
            raise ValueError(f"student.mm.type {given!r} differs from student.name {cfg.name!r}; drop one")
        for key in ("init_cfg", "pretrained"):
            if mm.get(key):
                raise ValueError(
                    f"student.mm.{key} would load weights from where the class says (nothing is "
                    "downloaded at run time): give them as student.weights, a path or s3:// URI (with "
                    "student.sha256)"
                )
        if cfg.out_indices is not None:
            raise ValueError("an mm/ student takes its outputs from student.mm (e.g. out_indices there)")

    def build(self, cfg: StudentConfig) -> StudentBackbone:
        from vfmkd_ray.models.students.mm_student import MMStudent

        return MMStudent(cfg.name, cfg.mm)

    def registry_type(self, cfg: StudentConfig) -> str:
        """Unchecked here (a config names any type); ``MMStudent`` checks the scope at build."""
        return cfg.name.removeprefix(self.prefix)


MM_FAMILY = register_family(MMFamily())


def registry_type(name: str) -> str:
    """``mm/mmdet.ResNet`` -> ``mmdet.ResNet``; ValueError for a type without a known scope."""
    type_name = name.removeprefix(MM_FAMILY.prefix)
    scope, _, cls = type_name.partition(".")
    if scope not in SCOPES or not cls:
        raise ValueError(
            f"student {name!r}: an OpenMMLab student is mm/<scope>.<Type> with scope one of {list(SCOPES)}, "
            "e.g. mm/mmdet.ResNet or mm/mmyolo.YOLOv8CSPDarknet"
        )
    return type_name
