"""Loss terms by config ``type``, built against the student's and teacher's feature levels."""

from __future__ import annotations

from collections.abc import Callable

from vfmkd_ray.losses.base import LossTerm
from vfmkd_ray.losses.config import DistillConfig, EdgeConfig, FeatureMSEConfig
from vfmkd_ray.losses.edge import EdgeLoss
from vfmkd_ray.losses.feature_mse import FeatureMSE
from vfmkd_ray.models.feature_info import FeatureInfo
from vfmkd_ray.registry import Registry

# Teacher layer name -> (C, H, W) of one sample, in the order the teacher returns them.
TeacherShapes = dict[str, tuple[int, int, int]]

LOSS_TERMS: Registry[Callable[..., LossTerm]] = Registry("loss term")


@LOSS_TERMS.register("feature_mse")
def _feature_mse(name: str, cfg: FeatureMSEConfig, student: FeatureInfo, teacher: TeacherShapes) -> LossTerm:
    layer = cfg.teacher_layer or next(iter(teacher))
    if layer not in teacher:
        raise ValueError(
            f"distill.terms.{name}.teacher_layer {layer!r} unknown; teacher layers: {list(teacher)}"
        )
    return FeatureMSE(name, cfg.weight, student, cfg.student_stride, layer, teacher[layer])


@LOSS_TERMS.register("edge")
def _edge(name: str, cfg: EdgeConfig, student: FeatureInfo, teacher: TeacherShapes) -> LossTerm:
    return EdgeLoss(name, cfg.weight, student, cfg.student_stride)


def build_loss_terms(cfg: DistillConfig, student: FeatureInfo, teacher: TeacherShapes) -> dict[str, LossTerm]:
    """One built term per ``distill.terms`` entry, keyed by its name."""
    if not cfg.terms:
        raise ValueError("distill.terms is empty: configure at least one loss term")
    terms = {}
    for name, term_cfg in cfg.terms.items():
        try:
            terms[name] = LOSS_TERMS.get(term_cfg.type)(name, term_cfg, student, teacher)
        except ValueError as err:
            raise ValueError(f"distill.terms.{name}: {err}") from None
    return terms
