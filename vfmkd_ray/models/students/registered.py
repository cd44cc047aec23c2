"""The family of students this product builds itself: a registry of named builders
(``yolov8_cspdarknet``), each taking ``student.size``.

Light on purpose, as ``timm_family``: a builder imports its module (and torch) when it builds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vfmkd_ray.models.students.family import StudentFamily, register_family
from vfmkd_ray.registry import Registry

if TYPE_CHECKING:
    from vfmkd_ray.models.students.base import StudentBackbone
    from vfmkd_ray.models.students.config import StudentConfig

STUDENTS: Registry[Callable[[StudentConfig], StudentBackbone]] = Registry("student")


class RegisteredFamily(StudentFamily):
    """Any name no other family's prefix claims: an unknown one fails at build, listing ``STUDENTS``."""

    name, prefix = "registered", ""

    def build(self, cfg: StudentConfig) -> StudentBackbone:
        return STUDENTS.get(cfg.name)(cfg)

    def label(self, cfg: StudentConfig) -> str:
        return f"{cfg.name}-{cfg.size}"


register_family(RegisteredFamily())


@STUDENTS.register("yolov8_cspdarknet")
def _yolov8(cfg: StudentConfig) -> StudentBackbone:
    from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet

    return YOLOv8CSPDarknet(cfg.size, cfg.out_indices or (1, 2, 3, 4))
