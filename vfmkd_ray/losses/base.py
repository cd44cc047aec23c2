"""What a loss term is: a weighted, named objective on one adapted student level.

A term reads one level of the student, from the backbone or from the neck (``student_source``),
through its own adapter; the model computes the adapted output (``Features.adapted[name]``) and the
term turns it and the batch into ``(loss, diagnostics)``.

Legend for tensor suffixes: B batch, C channels, H/W spatial.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vfmkd_ray.batch import Batch, DataNeeds
from vfmkd_ray.models.adapters import FeatureAdapter
from vfmkd_ray.models.feature_info import FeatureInfo


@dataclass(frozen=True)
class StudentLevels:
    """The student levels terms can read: the backbone's, and the neck's when there is one."""

    backbone: FeatureInfo
    neck: FeatureInfo | None = None

    def info(self, source: str) -> FeatureInfo:
        if source == "backbone":
            return self.backbone
        if self.neck is None:
            raise ValueError("student_source is 'neck' but the model has no neck (configure neck: ...)")
        return self.neck


class LossTerm:
    """Base class: subclasses build their adapter and compute ``(loss, diagnostics)``.

    ``teacher_layers`` names the teacher outputs (``<alias>/<layer>`` keys) the term reads from
    ``Batch.teacher_features``.
    """

    teacher_layers: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        weight: float,
        levels: StudentLevels,
        student_stride: int,
        source: str = "backbone",
        normalize: str = "none",
        adaptive=None,
    ):
        self.name = name
        self.weight = weight  # training.kd_weights may steer it between epochs (adaptive)
        self.source = source
        self.normalize = normalize
        self.adaptive = adaptive  # losses.config.AdaptiveWeightConfig, or None
        info = levels.info(source)
        self.student_level = info.index_of_stride(student_stride)
        self.in_channels = info.channels()[self.student_level]

    def build_adapter(self) -> nn.Module:
        raise NotImplementedError

    def needs(self) -> DataNeeds:
        """The ground truth the term reads from the batch (FGD: the boxes)."""
        return DataNeeds()

    def __call__(self, pred_BCHW: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def teacher_target(self, batch: Batch, teacher_key: str) -> torch.Tensor:
        """The target the term compares with: the teacher's map, standardised per channel by its
        store's statistics under ``normalize: channel``, by its store's PHI-S under ``phi_s``."""
        if self.normalize == "channel":
            return batch.standardized_target(teacher_key)
        if self.normalize == "phi_s":
            return batch.phi_s_target(teacher_key)
        return batch.teacher_features[teacher_key]


class TeacherMapTerm(LossTerm):
    """A term comparing one adapted student level with one teacher map, the adapter (a 1x1 conv and
    a resize) giving the student level the map's shape."""

    def __init__(self, name: str, cfg, levels: StudentLevels, teacher_key: str, teacher_shape):
        """``cfg``: the term's ``losses.config.TeacherTermConfig``."""
        super().__init__(
            name, cfg.weight, levels, cfg.student_stride, cfg.student_source, cfg.normalize, cfg.adaptive
        )
        self.teacher_key = teacher_key
        self.teacher_layers = (teacher_key,)
        self.teacher_shape = tuple(teacher_shape)

    def build_adapter(self) -> nn.Module:
        channels, height, width = self.teacher_shape
        return FeatureAdapter(self.in_channels, channels, (height, width))


@torch.no_grad()
def teacher_cosine(
    pred_BCHW: torch.Tensor, target_BCHW: torch.Tensor, batch: Batch, teacher_key: str
) -> torch.Tensor:
    """Mean cosine similarity between the adapted student and the teacher over the positions the
    target holds (``Batch.target_mask``): the ``cos`` diagnostic every teacher-reading term reports."""
    mask_B1HW = batch.target_mask(teacher_key, tuple(target_BCHW.shape[-2:]))
    cos_BHW = torch.nn.functional.cosine_similarity(pred_BCHW.float(), target_BCHW.float(), dim=1, eps=1e-6)
    return masked_mean(cos_BHW.unsqueeze(1), mask_B1HW)


def masked_mean(values_BXHW: torch.Tensor, mask_B1HW: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (all channels count)."""
    weights = mask_B1HW.expand_as(values_BXHW)
    return (values_BXHW * weights).sum() / weights.sum().clamp_min(1.0)
