"""Loss terms by config ``type``, built against the student's and the teachers' feature levels."""

from __future__ import annotations

from collections.abc import Callable

from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.heads.base import TeacherShapes
from vfmkd_ray.losses.base import LossTerm, StudentLevels
from vfmkd_ray.losses.config import (
    CosineConfig,
    CWDConfig,
    DistillConfig,
    EdgeConfig,
    FeatureMSEConfig,
    FGDConfig,
)
from vfmkd_ray.losses.cosine import CosineDistillation
from vfmkd_ray.losses.cwd import ChannelWiseDistillation
from vfmkd_ray.losses.edge import EdgeLoss
from vfmkd_ray.losses.feature_mse import FeatureMSE
from vfmkd_ray.losses.fgd import FGD
from vfmkd_ray.registry import Registry

LOSS_TERMS: Registry[Callable[..., LossTerm]] = Registry("loss term")


def teacher_layer(
    alias: str | None, layer: str | None, teacher: TeacherShapes
) -> tuple[str, tuple[int, int, int]]:
    """The ``<alias>/<layer>`` key a term reads (defaults: primary teacher, first layer) and its shape."""
    if not teacher:
        raise ValueError("it reads a teacher, but no teacher is configured (teachers: {...})")
    alias = alias or next(iter(teacher))
    if alias not in teacher:
        raise ValueError(f"teacher {alias!r} unknown; teachers: {list(teacher)}")
    layers = teacher[alias]
    layer = layer or next(iter(layers))
    if layer not in layers:
        raise ValueError(f"teacher_layer {layer!r} unknown; layers of teacher {alias!r}: {list(layers)}")
    return feature_key(alias, layer), layers[layer]


@LOSS_TERMS.register("feature_mse")
def _feature_mse(name: str, cfg: FeatureMSEConfig, levels: StudentLevels, teacher: TeacherShapes) -> LossTerm:
    key, shape = teacher_layer(cfg.teacher, cfg.teacher_layer, teacher)
    return FeatureMSE(name, cfg, levels, key, shape)


@LOSS_TERMS.register("cosine")
def _cosine(name: str, cfg: CosineConfig, levels: StudentLevels, teacher: TeacherShapes) -> LossTerm:
    key, shape = teacher_layer(cfg.teacher, cfg.teacher_layer, teacher)
    return CosineDistillation(name, cfg, levels, key, shape)


@LOSS_TERMS.register("fgd")
def _fgd(name: str, cfg: FGDConfig, levels: StudentLevels, teacher: TeacherShapes) -> LossTerm:
    key, shape = teacher_layer(cfg.teacher, cfg.teacher_layer, teacher)
    return FGD(name, cfg, levels, key, shape)


@LOSS_TERMS.register("cwd")
def _cwd(name: str, cfg: CWDConfig, levels: StudentLevels, teacher: TeacherShapes) -> LossTerm:
    key, shape = teacher_layer(cfg.teacher, cfg.teacher_layer, teacher)
    return ChannelWiseDistillation(name, cfg, levels, key, shape)


@LOSS_TERMS.register("edge")
def _edge(name: str, cfg: EdgeConfig, levels: StudentLevels, teacher: TeacherShapes) -> LossTerm:
    return EdgeLoss(name, cfg.weight, levels, cfg.student_stride, cfg.student_source)


def build_loss_terms(
    cfg: DistillConfig, levels: StudentLevels, teacher: TeacherShapes
) -> dict[str, LossTerm]:
    """One built term per ``distill.terms`` entry, keyed by its name (none is fine: heads may train
    alone)."""
    terms = {}
    for name, term_cfg in cfg.terms.items():
        try:
            terms[name] = LOSS_TERMS.get(term_cfg.type)(name, term_cfg, levels, teacher)
        except ValueError as err:
            raise ValueError(f"distill.terms.{name}: {err}") from None
    return terms
