"""``MultiTaskModel``: the one model every run trains, exports and evaluates.

A student backbone, an optional neck, one adapter per feature-KD term and named task heads, as one
``nn.Module`` so that DDP wraps (and synchronises) all of it; frozen teachers are never part of it.
State-dict keys: ``backbone.*``, ``neck.*``, ``adapters.<term>.*``, ``heads.<name>.*``.

``forward`` returns every backbone level, the neck's levels, the adapted output of each term and
each head's output. ``head_output`` runs one head again on other images (YOLC's crop passes).
``participation`` is an exact zero that depends on every level, so that DDP finds a gradient for
every backbone and neck parameter even when no term or head reads some level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vfmkd_ray.heads.base import Features
from vfmkd_ray.models.necks.base import Neck
from vfmkd_ray.models.students.base import StudentBackbone


@dataclass
class ModelOutput:
    features: Features
    heads: dict[str, Any]

    def participation(self) -> torch.Tensor:
        levels = self.features.backbone + (self.features.neck or ())
        return sum(level.float().mean() for level in levels) * 0.0


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        backbone: StudentBackbone,
        neck: Neck | None,
        adapters: dict[str, nn.Module],
        adapter_inputs: dict[str, tuple[str, int]],  # term -> (backbone | neck, level index)
        heads: dict[str, nn.Module],
    ):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.adapters = nn.ModuleDict(adapters)
        self.adapter_inputs = dict(adapter_inputs)
        self.heads = nn.ModuleDict(heads)
        self.backbone_frozen = False

    def freeze_backbone(self) -> MultiTaskModel:
        """The backbone stops training: no gradients, and batch norm keeps its running statistics
        (eval mode) whatever mode the rest of the model is in."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> MultiTaskModel:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.train(False)
        return self

    def features(self, images_BCHW: torch.Tensor) -> Features:
        backbone = self.backbone(images_BCHW)
        neck = self.neck(backbone) if self.neck is not None else None
        levels = {"backbone": backbone, "neck": neck}
        adapted = {
            name: adapter(levels[source][index])
            for name, adapter in self.adapters.items()
            for source, index in (self.adapter_inputs[name],)
        }
        return Features(backbone, neck, adapted)

    def forward(self, images_BCHW: torch.Tensor) -> ModelOutput:
        features = self.features(images_BCHW)
        return ModelOutput(features, {name: head(features) for name, head in self.heads.items()})

    def head_output(self, name: str, images_BCHW: torch.Tensor) -> Any:
        """Head ``name``'s output on ``images`` (the backbone, neck and adapters run again)."""
        return self.heads[name](self.features(images_BCHW))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.backbone.state_dict().items()}


class FrozenModel(nn.Module):
    """A trained model used as a teacher: eval mode for good, no gradients."""

    def __init__(self, model: MultiTaskModel):
        super().__init__()
        self.model = model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenModel:
        return super().train(False)

    @property
    def heads(self) -> nn.ModuleDict:
        return self.model.heads

    @torch.no_grad()
    def head_output(self, name: str, images_BCHW: torch.Tensor) -> Any:
        return self.model.head_output(name, images_BCHW)
