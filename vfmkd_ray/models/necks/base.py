"""The interface every neck implements: backbone levels in, its own levels out, with ``feature_info``."""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo


class Neck(nn.Module):
    """Takes the whole tuple of backbone levels (``StudentBackbone.forward``'s output) and returns the
    levels described by its ``feature_info``, in order."""

    feature_info: FeatureInfo

    def forward(self, levels: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError
