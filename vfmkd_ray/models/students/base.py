"""The interface every student backbone implements."""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo


class StudentBackbone(nn.Module):
    """A trainable backbone whose forward returns a tuple of feature maps described by
    ``feature_info`` (the seed design's ``get_feature_dims``/``get_feature_strides`` too)."""

    feature_info: FeatureInfo
    # Set by models that only accept one input resolution (plain ViTs); None means any multiple of
    # the largest stride.
    fixed_input_size: int | None = None

    def get_feature_dims(self) -> list[int]:
        return self.feature_info.channels()

    def get_feature_strides(self) -> list[int]:
        return self.feature_info.reduction()

    def forward(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError
