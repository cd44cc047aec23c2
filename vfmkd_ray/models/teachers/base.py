"""The frozen teacher interface: eval mode, no gradients, forward under ``no_grad``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel

RANDOM_WEIGHTS = "random"


class FrozenTeacher(nn.Module):
    """A foundation-model feature extractor that never trains.

    Subclasses set ``layer_names`` (one per ``feature_info`` level) and implement ``extract``.
    ``selected_layers`` (all by default, see ``select_layers``) are the ones the forward returns and
    the store keeps. ``weights_id`` records which weights are loaded (their sha256, or
    ``random(seed=N)``); the feature store manifest copies it.
    """

    name: str
    input_size: int
    feature_info: FeatureInfo
    layer_names: tuple[str, ...]
    selected_layers: tuple[str, ...] = ()
    weights_id: str

    def select_layers(self, names: Sequence[str] | None) -> FrozenTeacher:
        """Keeps only ``names`` (in the teacher's order); None or empty keeps every layer."""
        if not names:
            self.selected_layers = tuple(self.layer_names)
            return self
        if unknown := [n for n in names if n not in self.layer_names]:
            raise ValueError(f"{self.name} has no layer {unknown}; its layers: {list(self.layer_names)}")
        self.selected_layers = tuple(n for n in self.layer_names if n in names)
        return self

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
        features = dict(zip(self.layer_names, self.extract(images_BCHW), strict=True))
        return {name: features[name] for name in self._selected()}

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Per selected layer (C, H, W) for one ``input_size`` image; the store schema follows it."""
        shapes = {}
        for name, level in self._levels().items():
            side = self.input_size // level.reduction
            shapes[name] = (level.channels, side, side)
        return {name: shapes[name] for name in self._selected()}

    def layer_strides(self) -> dict[str, int]:
        levels = self._levels()
        return {name: levels[name].reduction for name in self._selected()}

    def _levels(self) -> dict[str, FeatureLevel]:
        return dict(zip(self.layer_names, self.feature_info.levels, strict=True))

    def _selected(self) -> tuple[str, ...]:
        return self.selected_layers or tuple(self.layer_names)
