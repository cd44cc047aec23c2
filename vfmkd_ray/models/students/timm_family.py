"""The timm student family: any timm model as a student, named ``timm/<name>``.

Light on purpose: resolving a student name (every config load, in every Ray process that reads one)
must not import timm, whose import pulls in torchvision and torch._dynamo (3 s here); ``build``
imports the student (``timm_student``) when one is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfmkd_ray.models.students.family import StudentFamily, register_family

if TYPE_CHECKING:
    from vfmkd_ray.models.students.base import StudentBackbone
    from vfmkd_ray.models.students.config import StudentConfig

# The timm students this product documents and tests; any other timm name works the same way.
KNOWN_TIMM_STUDENTS = (
    "timm/repvit_m0_9",
    "timm/hgnetv2_b4",
    "timm/mambaout_femto",
    "timm/vit_small_patch16_224",
)


class TimmFamily(StudentFamily):
    """``timm/<name>``: ``<name>`` is the ``timm.create_model`` name."""

    name, prefix = "timm", "timm/"

    def build(self, cfg: StudentConfig) -> StudentBackbone:
        from vfmkd_ray.models.students.timm_student import TimmStudent

        return TimmStudent(self.timm_name(cfg), cfg.out_indices)

    def timm_name(self, cfg: StudentConfig) -> str:
        return cfg.name.removeprefix(self.prefix)


register_family(TimmFamily())
