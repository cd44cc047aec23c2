"""The Ray-free distillation step: forward, weighted loss terms, and the optimiser update.

``kd_step`` returns ``{"loss": total, "loss/<term>": value, "<diag>/<term>": value}``; only
``loss`` carries gradients. Teacher targets come from the store (``batch.teacher_features``) or, if
missing there, from live frozen teachers run under ``no_grad``.
"""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.losses.base import KDBatch, LossTerm
from vfmkd_ray.models.teachers.base import FrozenTeacher
from vfmkd_ray.models.teachers.ensemble import run_teachers
from vfmkd_ray.train.distiller import DistillerSetup


def kd_step(
    distiller: nn.Module,
    batch: KDBatch,
    loss_terms: dict[str, LossTerm],
    teachers: dict[str, FrozenTeacher] | None = None,
) -> dict[str, torch.Tensor]:
    if teachers and not batch.teacher_features:
        batch.teacher_features = run_teachers(teachers, batch.images_BCHW)
    preds = distiller(batch.images_BCHW)
    out: dict[str, torch.Tensor] = {}
    total = batch.images_BCHW.new_zeros(())
    for name, term in loss_terms.items():
        value, diagnostics = term(preds[name], batch)
        total = total + term.weight * value.float()
        out[f"loss/{name}"] = value.detach().float()
        out.update({f"{key}/{name}": v.detach().float() for key, v in diagnostics.items()})
    out["loss"] = total
    return out


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    parameters: list[nn.Parameter],
    grad_clip_norm: float,
) -> torch.Tensor:
    """Backward (scaled under AMP), unscale, clip, step; returns the pre-clip gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return grad_norm


def train_step(
    model: nn.Module, batch: KDBatch, setup: DistillerSetup, grad_clip_norm: float
) -> dict[str, float]:
    """One optimiser step of the training loop (``model`` is the distiller, DDP-wrapped or not);
    every output comes back as a host float, which also waits for the device."""
    with torch.autocast(batch.images_BCHW.device.type, enabled=setup.use_amp):
        out = kd_step(model, batch, setup.terms)
    out["data/online_share"] = torch.tensor(batch.num_online / len(batch.images_BCHW))
    optimizer_step(out["loss"], setup.optimizer, setup.scaler, setup.trainable, grad_clip_norm)
    setup.scheduler.step()
    return {key: float(value.detach()) for key, value in out.items()}
