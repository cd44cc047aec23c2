"""Several named teachers on one batch: their features keyed ``<alias>/<layer>``.

A run names its teachers (``teachers: {sam: ..., dino: ...}``); loss terms and the batch feed refer
to a teacher output by ``data.feature_keys.feature_key(alias, layer)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.models.teachers.base import FrozenTeacher


def at_input_size(images_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    """The letterboxed batch at another square size.

    Letterboxing puts the resized image at the top-left of a square canvas, so resizing the whole
    canvas gives the letterbox that size would have produced, up to interpolation.
    """
    if images_BCHW.shape[-1] == size:
        return images_BCHW
    return F.interpolate(images_BCHW, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def run_teachers(teachers: Mapping[str, FrozenTeacher], images_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every teacher's selected layers on ``images_BCHW``, each teacher at its own input size."""
    features = {}
    for alias, teacher in teachers.items():
        for layer, value in teacher(at_input_size(images_BCHW, teacher.input_size)).items():
            features[feature_key(alias, layer)] = value
    return features
