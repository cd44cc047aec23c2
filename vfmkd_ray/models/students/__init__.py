"""Student backbones, by family (``family``): registered builders (``STUDENTS``), any timm model
as ``timm/<name>`` and any OpenMMLab registry backbone as ``mm/<scope>.<Type>``."""

from __future__ import annotations

import logging

from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.models.students.family import STUDENT_FAMILIES, StudentFamily, family_of
from vfmkd_ray.models.students.mm_student import MMFamily
from vfmkd_ray.models.students.registered import STUDENTS, RegisteredFamily
from vfmkd_ray.models.students.timm_student import TimmFamily
from vfmkd_ray.models.students.weight_layouts import WeightsReport, adapt_weights
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet

logger = logging.getLogger(__name__)

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
    student = cfg.family.build(cfg)
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
    "STUDENT_FAMILIES",
    "MMFamily",
    "RegisteredFamily",
    "StudentBackbone",
    "StudentConfig",
    "StudentFamily",
    "TimmFamily",
    "WeightsReport",
    "adapt_weights",
    "build_student",
    "family_of",
]
