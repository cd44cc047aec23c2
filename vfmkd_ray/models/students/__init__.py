"""Student backbones: a registry of named builders, any timm model as ``timm/<name>`` and any
OpenMMLab registry backbone as ``mm/<scope>.<Type>``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.config import TIMM_PREFIX, StudentConfig
from vfmkd_ray.models.students.mm_student import MMStudent
from vfmkd_ray.models.students.timm_student import TimmStudent
from vfmkd_ray.models.students.weight_layouts import WeightsReport, adapt_weights
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet
from vfmkd_ray.registry import Registry

logger = logging.getLogger(__name__)

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
    """Builds the student named in ``cfg``; loads ``cfg.weights`` when given: a file a run wrote, a
    plain timm state dict or an MMEngine checkpoint (``weight_layouts``), checked against
    ``cfg.sha256``."""
    if cfg.name.startswith(TIMM_PREFIX):
        student: StudentBackbone = TimmStudent(cfg.name[len(TIMM_PREFIX) :], cfg.out_indices)
    elif cfg.is_mm:
        student = MMStudent(cfg.name, cfg.mm)
    else:
        student = STUDENTS.get(cfg.name)(cfg)
    if cfg.weights is not None:
        from vfmkd_ray.models.checkpoint_io import load_state_dict

        payload = load_state_dict(cfg.weights, cfg.sha256)
        payload = payload.get("backbone", payload)  # a run's best_backbone.pth
        state, report = adapt_weights(payload, student, f"student weights {cfg.weights}", cfg.label)
        student.load_state_dict(state, strict=True)
        logger.info("%s", report.describe())
    return student


__all__ = [
    "KNOWN_TIMM_STUDENTS",
    "STUDENTS",
    "StudentBackbone",
    "StudentConfig",
    "WeightsReport",
    "adapt_weights",
    "build_student",
]
