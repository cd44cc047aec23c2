"""Student families: what a student name means, resolved by one lookup.

A student is a registered builder (``yolov8_cspdarknet``), any timm model (``timm/<name>``) or any
OpenMMLab registry backbone (``mm/<scope>.<Type>``). Each kind is a family registered once with
its name prefix (the registered family's is empty); ``family_of`` resolves any name to the family
with the longest prefix it starts with. The family answers everything the rest of the product asks
about a student: how to build it, how messages name it, and the timm model name and registry type
that export hands to detectors. Only a family's own module spells its prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from vfmkd_ray.registry import Registry

if TYPE_CHECKING:
    from vfmkd_ray.models.students.base import StudentBackbone
    from vfmkd_ray.models.students.config import StudentConfig


class StudentFamily:
    """Base class of every family; subclasses set ``name`` and ``prefix`` and implement ``build``."""

    name: ClassVar[str]
    prefix: ClassVar[str]
    # Whether the name (and size) alone say which student it is, as `vfmkd export --student` gives it;
    # an mm/ student is its backbone dict (student.mm) too.
    described_by_name: ClassVar[bool] = True

    def check(self, cfg: StudentConfig) -> None:
        """Refuses fields of ``cfg`` this family does not take (ValueError, naming the key)."""
        if cfg.mm is not None:
            raise ValueError(
                f"student.mm is the backbone dict of an mm/<scope>.<Type> student, not {cfg.name}"
            )

    def build(self, cfg: StudentConfig) -> StudentBackbone:
        """The student with its initial weights (``student.weights`` is loaded by the caller)."""
        raise NotImplementedError

    def label(self, cfg: StudentConfig) -> str:
        """How messages name the student."""
        return cfg.name

    def timm_name(self, cfg: StudentConfig) -> str | None:
        """The ``timm.create_model`` name of a timm student; None for any other."""
        return None

    def registry_type(self, cfg: StudentConfig) -> str | None:
        """The OpenMMLab registry type (``mmdet.ResNet``) of a registry student; None for any other."""
        return None


STUDENT_FAMILIES: Registry[StudentFamily] = Registry("student family")


def register_family(family: StudentFamily) -> StudentFamily:
    """Registers ``family`` under its name; two families with one prefix are an error."""
    for other in STUDENT_FAMILIES:
        if STUDENT_FAMILIES.get(other).prefix == family.prefix:
            raise ValueError(
                f"student families {other!r} and {family.name!r} share the prefix {family.prefix!r}"
            )
    STUDENT_FAMILIES.add(family.name, family)
    return family


def family_of(name: str) -> StudentFamily:
    """The family of a student name: the longest registered prefix the name starts with."""
    families = [STUDENT_FAMILIES.get(key) for key in STUDENT_FAMILIES]
    matching = [family for family in families if name.startswith(family.prefix)]
    assert matching, "the registered family's empty prefix matches every name"
    return max(matching, key=lambda family: len(family.prefix))
