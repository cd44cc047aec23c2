"""Loss terms by config ``type``, built against the student's and the teachers' feature levels."""

from __future__ import annotations

from collections.abc import Callable

from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.losses.base import LossTerm
from vfmkd_ray.losses.config import DistillConfig, EdgeConfig, FeatureMSEConfig, FGDConfig
from vfmkd_ray.losses.edge import EdgeLoss
from vfmkd_ray.losses.feature_mse import FeatureMSE
from vfmkd_ray.losses.fgd import FGD
from vfmkd_ray.models.feature_info import FeatureInfo
from vfmkd_ray.registry import Registry

# Teacher alias -> layer name -> (C, H, W) of one sample; the first teacher is the primary one.
TeacherShapes = dict[str, dict[str, tuple[int, int, int]]]

LOSS_TERMS: Registry[Callable[..., LossTerm]] = Registry("loss term")


@LOSS_TERMS.register("feature_mse")
def _feature_mse(name: str, cfg: FeatureMSEConfig, student: FeatureInfo, teacher: TeacherShapes) -> LossTerm:
    key, shape = _teacher_layer(cfg.teacher, cfg.teacher_layer, teacher)
    return FeatureMSE(name, cfg.weight, student, cfg.student_stride, key, shape)


def _teacher_layer(
    alias: str | None, layer: str | None, teacher: TeacherShapes
) -> tuple[str, tuple[int, int, int]]:
    """The ``<alias>/<layer>`` key a term reads (defaults: primary teacher, first layer) and its shape."""
    alias = alias or next(iter(teacher))
    if alias not in teacher:
        raise ValueError(f"teacher {alias!r} unknown; teachers: {list(teacher)}")
    layers = teacher[alias]
    layer = layer or next(iter(layers))
    if layer not in layers:
        raise ValueError(f"teacher_layer {layer!r} unknown; layers of teacher {alias!r}: {list(layers)}")
    return feature_key(alias, layer), layers[layer]


@LOSS_TERMS.register("fgd")
def _fgd(name: str, cfg: FGDConfig, student: FeatureInfo, teacher: TeacherShapes) -> LossTerm:
    key, shape = _teacher_layer(cfg.teacher, cfg.teacher_layer, teacher)
    return FGD(name, cfg, student, key, shape)


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
