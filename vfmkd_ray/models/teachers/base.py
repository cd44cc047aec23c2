"""The frozen teacher interface: eval mode, no gradients, forward under ``no_grad``."""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo

RANDOM_WEIGHTS = "random"


class FrozenTeacher(nn.Module):
    """A foundation-model feature extractor that never trains.

    Subclasses set ``layer_names`` (one per ``feature_info`` level) and implement ``extract``.
    ``weights_id`` records which weights are loaded (their sha256, or ``random(seed=N)``); the
    feature store manifest copies it.
    """

    name: str
    input_size: int
    feature_info: FeatureInfo
    layer_names: tuple[str, ...]
    weights_id: str

    def freeze(self) -> FrozenTeacher:
        for param in self.parameters():
            param.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        # A teacher stays in eval mode whatever its parent module does.
        return super().train(False)

    def extract(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.extract(images_BCHW)
        return dict(zip(self.layer_names, features, strict=True))

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Per-layer (C, H, W) for one ``input_size`` image; the store schema is derived from it."""
        return {
            name: (
                level.channels,
                self.input_size // level.reduction,
                self.input_size // level.reduction,
            )
            for name, level in zip(self.layer_names, self.feature_info.levels, strict=True)
        }
