"""``TrainTask``: what a run trains and how: the model with its heads and terms (``ModelParts``),
the optimiser, the schedule and the AMP scaler, and which of them a checkpoint saves
(``stateful``). Built the same way by the Ray worker and by the plain loop of ``benchmarks/``, so
both time the same code."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.heads.base import TeacherShapes
from vfmkd_ray.models.build import ModelParts, build_model
from vfmkd_ray.models.from_run import load_frozen_model
from vfmkd_ray.train.checkpointing import Stateful
from vfmkd_ray.train.schedule import CosineSchedule


@dataclass
class TrainTask:
    parts: ModelParts
    optimizer: torch.optim.Optimizer
    scheduler: CosineSchedule
    scaler: torch.amp.GradScaler
    use_amp: bool
    trainable: list[nn.Parameter]  # what the optimiser steps and the gradient clip sees

    def stateful(self) -> dict[str, Stateful]:
        """What a checkpoint saves and restores, by name, in restore order (the schedule after the
        optimiser, whose saved rates it sets again). A new part (an EMA) is listed here."""
        return {
            "model": self.parts.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }


def build_task(
    cfg: ExperimentConfig, shapes: TeacherShapes, total_steps: int, device: torch.device
) -> TrainTask:
    """The model seeded from ``cfg.seed`` on ``device``, AdamW over its trainable parameters with a
    cosine schedule over ``total_steps``, the run's planned steps (the backbone frozen when
    ``train.freeze_backbone``), and AMP on CUDA when ``train.amp``."""
    parts = build_model(cfg, shapes, load_run_model=load_frozen_model).to(device)
    if cfg.train.freeze_backbone:
        parts.model.freeze_backbone()
    trainable = [p for p in parts.model.parameters() if p.requires_grad]
    train = cfg.train
    optimizer = torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)
    scheduler = CosineSchedule(optimizer, total_steps)
    use_amp = train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    return TrainTask(parts, optimizer, scheduler, scaler, use_amp, trainable)
