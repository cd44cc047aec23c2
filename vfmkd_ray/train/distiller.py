"""The trainable half of distillation: student + one adapter per loss term, as one module.

One module so that DDP wraps (and synchronises) the student and the adapters together; the frozen
teacher is never part of it.
"""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.losses.base import LossTerm
from vfmkd_ray.models.students.base import StudentBackbone


class Distiller(nn.Module):
    def __init__(self, student: StudentBackbone, loss_terms: dict[str, LossTerm]):
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleDict({name: term.build_adapter() for name, term in loss_terms.items()})
        self.levels = {name: term.student_level for name, term in loss_terms.items()}

    def uses_every_level(self) -> bool:
        """False when some student output feeds no term (DDP must then look for unused params)."""
        return set(self.levels.values()) == set(range(len(self.student.feature_info)))

    def forward(self, images_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.student(images_BCHW)
        return {name: adapter(feats[self.levels[name]]) for name, adapter in self.adapters.items()}
