"""Student backbones, by family (``family``): registered builders (``STUDENTS``), any timm model
as ``timm/<name>`` and any OpenMMLab registry backbone as ``mm/<scope>.<Type>``.

Importing this package (as every config load does) registers the families and imports no torch:
each family imports its students when it builds one. The students' base class is in ``base``, the
weight layouts a student file may come in are in ``weight_layouts``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.models.students.family import STUDENT_FAMILIES, StudentFamily, family_of
from vfmkd_ray.models.students.mm_family import MMFamily
from vfmkd_ray.models.students.registered import STUDENTS, RegisteredFamily
from vfmkd_ray.models.students.timm_family import KNOWN_TIMM_STUDENTS, TimmFamily

if TYPE_CHECKING:
    from vfmkd_ray.models.students.base import StudentBackbone

logger = logging.getLogger(__name__)


def build_student(cfg: StudentConfig) -> StudentBackbone:
    """Builds the student named in ``cfg``; loads ``cfg.weights`` when given: a file a run wrote, a
    plain timm state dict or an MMEngine checkpoint (``weight_layouts``), checked against
    ``cfg.sha256``."""
    student = cfg.family.build(cfg)
    if cfg.weights is not None:
        from vfmkd_ray.models.checkpoint_io import load_state_dict
        from vfmkd_ray.models.students.weight_layouts import adapt_weights

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
    "StudentConfig",
    "StudentFamily",
    "TimmFamily",
    "build_student",
    "family_of",
]
