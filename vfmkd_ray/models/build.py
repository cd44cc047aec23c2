"""Building the one model of a run from its config: backbone, neck, term adapters and heads.

``build_model`` is what the Ray worker, ``vfmkd eval``, ``vfmkd export`` and a run teacher all call,
so a checkpoint always meets the same module tree. Teacher layer shapes come from the teachers'
structure (``teacher_shapes``), never from loading their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.config_checks import used_teachers
from vfmkd_ray.heads.base import DataNeeds, HeadContext, RunModelLoader, TaskHead, TeacherShapes
from vfmkd_ray.heads.registry import build_heads, data_needs
from vfmkd_ray.losses.base import LossTerm, StudentLevels
from vfmkd_ray.losses.registry import build_loss_terms
from vfmkd_ray.models.multitask import MultiTaskModel
from vfmkd_ray.models.necks.registry import build_neck
from vfmkd_ray.models.students import build_student
from vfmkd_ray.models.teachers.build import teacher_shapes


@dataclass
class ModelParts:
    """The model and the objects that score it: what a run trains, whatever its heads and terms."""

    model: MultiTaskModel
    heads: dict[str, TaskHead]
    terms: dict[str, LossTerm]

    @property
    def needs(self) -> DataNeeds:
        """What the heads and the terms need from every batch."""
        needs = data_needs(self.heads)
        for term in self.terms.values():
            needs = needs.merge(term.needs())
        return needs

    def teacher_keys(self) -> set[str]:
        """Every ``<alias>/<layer>`` a term or head reads from the batch."""
        parts = [*self.terms.values(), *self.heads.values()]
        return {key for part in parts for key in part.teacher_layers}

    def to(self, device: torch.device) -> ModelParts:
        self.model.to(device)
        for head in self.heads.values():
            head.to(device)
        return self


def run_teacher_shapes(cfg: ExperimentConfig) -> TeacherShapes:
    """Layer shapes of the teachers some term or head reads, primary first."""
    return teacher_shapes({alias: cfg.teachers[alias] for alias in used_teachers(cfg)})


def build_model(
    cfg: ExperimentConfig,
    shapes: TeacherShapes | None = None,
    load_weights: bool = True,
    load_run_model: RunModelLoader | None = None,
) -> ModelParts:
    """The model of ``cfg``, seeded from ``cfg.seed``. ``load_weights=False`` skips
    ``student.weights`` and the weights heads would start from (a checkpoint is about to be loaded
    over the model, or the build is on meta). ``load_run_model`` rebuilds a trained run for heads
    distilled from one (``models.from_run.load_frozen_model``; this module sits below it)."""
    torch.manual_seed(cfg.seed)
    student_cfg = cfg.student if load_weights else cfg.student.model_copy(update={"weights": None})
    backbone = build_student(student_cfg)
    neck = build_neck(cfg.neck, backbone.feature_info, cfg.student) if cfg.neck is not None else None
    levels = StudentLevels(backbone.feature_info, neck.feature_info if neck is not None else None)
    shapes = run_teacher_shapes(cfg) if shapes is None else shapes
    terms = build_loss_terms(cfg.distill, levels, shapes)
    context = HeadContext(
        backbone_info=backbone.feature_info,
        neck_info=levels.neck,
        input_size=cfg.input_size,
        student_name=cfg.student.name,
        student_size=cfg.student.size,
        teacher_shapes=shapes,
        teachers=dict(cfg.teachers),
        terms=terms,
        fresh=load_weights,
        load_run_model=load_run_model,
    )
    heads = build_heads(cfg.heads, context)
    model = MultiTaskModel(
        backbone,
        neck,
        {name: term.build_adapter() for name, term in terms.items()},
        {name: (term.source, term.student_level) for name, term in terms.items()},
        {name: head.build_module() for name, head in heads.items()},
    )
    return ModelParts(model, heads, terms)
