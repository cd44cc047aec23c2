"""A model of the user's own as a teacher: a ``best_model.pth`` (or a training checkpoint's
``training_state.pt``) written by this product, frozen, with its backbone levels
(``backbone_s<stride>``) and its neck levels (``neck_s<stride>``) as teacher layers, described by
``feature_info`` like any other teacher.

So a trained detector or multi-task model can be precomputed into a store and distilled like SAM or
DINOv2, and feature terms (FGD on a neck level, say) read it through the teacher interface. The
architecture comes from the run's config (``models.from_run.model_config``: its resolved config, so
describing the teacher's shapes reads no weights); the weights are the file's ``model``.

A run teacher is a model of this product, so this module calls ``models.from_run``, which sits
above ``models.build`` and so above the teachers: the one import against the layers, declared in
the import contract (``pyproject.toml``) and made at call time.
"""

from __future__ import annotations

import torch

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.teachers.base import FrozenTeacher
from vfmkd_ray.models.teachers.config import TeacherConfig

RUN_TEACHER = "run"


class RunTeacher(FrozenTeacher):
    def __init__(self, cfg: TeacherConfig):
        super().__init__()
        from vfmkd_ray.models import from_run

        if cfg.weights is None or cfg.weights == "random":
            raise ValueError(
                f"a {RUN_TEACHER} teacher needs weights: a run's best_model.pth, got {cfg.weights}"
            )
        self.model = from_run.untrained_model(cfg.weights)
        self.name = RUN_TEACHER
        self.input_size = cfg.input_size
        levels = [("backbone", level) for level in self.model.backbone.feature_info.levels]
        if self.model.neck is not None:
            levels += [("neck", level) for level in self.model.neck.feature_info.levels]
        self.layer_names = tuple(f"{source}_s{level.reduction}" for source, level in levels)
        if len(set(self.layer_names)) != len(self.layer_names):
            raise ValueError(f"{cfg.weights}: two levels share a stride: {self.layer_names}")
        self.feature_info = FeatureInfo(
            [FeatureLevel(level.channels, level.reduction, f"model.{source}") for source, level in levels]
        )

    def extract(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.features(images_BCHW)
        return tuple(features.backbone) + tuple(features.neck or ())

    def load_checkpoint(self, state_dict: dict) -> None:
        """Loads the file's whole model (``{"model": ..., "config": ...}`` or a training state)."""
        self.model.load_state_dict(state_dict.get("model", state_dict), strict=True)
