"""Student backbones: a registry of named builders plus any timm model as ``timm/<name>``."""

from __future__ import annotations

from collections.abc import Callable

from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.models.students.timm_student import TIMM_PREFIX, TimmStudent
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet
from vfmkd_ray.registry import Registry

STUDENTS: Registry[Callable[[StudentConfig], StudentBackbone]] = Registry("student")

# The timm students this product documents and tests; any other timm name works the same way.
KNOWN_TIMM_STUDENTS = (
    "timm/repvit_m0_9",
    "timm/hgnetv2_b4",
    "timm/mambaout_femto",
    "timm/vit_small_patch16_224",
)


@STUDENTS.register("yolov8_cspdarknet")
def _yolov8(cfg: StudentConfig) -> StudentBackbone:
    return YOLOv8CSPDarknet(cfg.size, cfg.out_indices or (1, 2, 3, 4))


def build_student(cfg: StudentConfig) -> StudentBackbone:
    """Builds the student named in ``cfg``; loads ``cfg.weights`` when given."""
    if cfg.name.startswith(TIMM_PREFIX):
        student: StudentBackbone = TimmStudent(cfg.name[len(TIMM_PREFIX) :], cfg.out_indices)
    else:
        student = STUDENTS.get(cfg.name)(cfg)
    if cfg.weights is not None:
        from vfmkd_ray.models.checkpoint_io import load_state_dict

        state = load_state_dict(cfg.weights, cfg.sha256)
        state = state.get("backbone", state)
        missing, unexpected = student.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"student weights {cfg.weights} do not fit {cfg.name}: "
                f"missing {missing[:5]}..., unexpected {unexpected[:5]}..."
            )
    return student


__all__ = ["KNOWN_TIMM_STUDENTS", "STUDENTS", "StudentBackbone", "StudentConfig", "build_student"]
