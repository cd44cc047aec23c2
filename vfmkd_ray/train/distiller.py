"""The trainable half of distillation: student + one adapter per loss term, as one module, and the
optimiser, schedule and AMP scaler a run trains it with.

One module so that DDP wraps (and synchronises) the student and the adapters together; the frozen
teacher is never part of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.losses.base import LossTerm
from vfmkd_ray.losses.registry import TeacherShapes, build_loss_terms
from vfmkd_ray.models.students import build_student
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


@dataclass
class DistillerSetup:
    """A run's trainable parts, built the same way by the Ray worker and the plain benchmark loop."""

    distiller: Distiller
    terms: dict[str, LossTerm]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    use_amp: bool
    trainable: list[nn.Parameter]  # what the optimiser steps and the gradient clip sees

    def resumable(self) -> dict:
        return {
            "distiller": self.distiller,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }


def build_distiller(
    cfg: ExperimentConfig, teacher_shapes: TeacherShapes, total_steps: int, device: torch.device
) -> DistillerSetup:
    """Student, adapters and loss terms seeded from ``cfg.seed``, AdamW with a cosine schedule over
    ``total_steps``, and AMP on CUDA when ``train.amp``."""
    torch.manual_seed(cfg.seed)
    student = build_student(cfg.student)
    terms = build_loss_terms(cfg.distill, student.feature_info, teacher_shapes)
    distiller = Distiller(student, terms).to(device)
    train = cfg.train
    optimizer = torch.optim.AdamW(distiller.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    use_amp = train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    trainable = [p for p in distiller.parameters() if p.requires_grad]
    return DistillerSetup(distiller, terms, optimizer, scheduler, scaler, use_amp, trainable)
