"""What a loss term is: a weighted, named objective on one adapted student level.

Legend for tensor suffixes: B batch, C channels, H/W spatial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo


@dataclass
class KDBatch:
    """One batch as the losses see it.

    Attributes:
        images_BCHW: ImageNet-normalised float images (letterboxed squares).
        valid_hw_B2: unpadded height and width of each image.
        teacher_features: ``<alias>/<layer>`` (``data.feature_keys.feature_key``) -> float
            ``B x C x h x w`` target.
    """

    images_BCHW: torch.Tensor
    valid_hw_B2: torch.Tensor
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    num_online: int = 0  # samples whose teacher_features were computed live in the worker
    boxes: list[torch.Tensor] | None = None  # detection: per image N x 4 ground-truth pixel boxes

    @property
    def image_size(self) -> int:
        return int(self.images_BCHW.shape[-1])


class LossTerm:
    """Base class: subclasses build their adapter and compute ``(loss, diagnostics)``.

    ``teacher_layers`` names the teacher outputs (``<alias>/<layer>`` keys) the term reads from
    ``KDBatch.teacher_features``.
    """

    teacher_layers: tuple[str, ...] = ()

    def __init__(self, name: str, weight: float, student_info: FeatureInfo, student_stride: int):
        self.name = name
        self.weight = weight
        self.student_level = student_info.index_of_stride(student_stride)
        self.in_channels = student_info.channels()[self.student_level]

    def build_adapter(self) -> nn.Module:
        raise NotImplementedError

    def __call__(
        self, pred_BCHW: torch.Tensor, batch: KDBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


def masked_mean(values_BXHW: torch.Tensor, mask_B1HW: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (all channels count)."""
    weights = mask_B1HW.expand_as(values_BXHW)
    return (values_BXHW * weights).sum() / weights.sum().clamp_min(1.0)
