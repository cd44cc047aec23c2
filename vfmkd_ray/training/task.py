"""``TrainTask``: what a run trains and how: the model with its heads and terms (``ModelParts``),
the optimiser over its parameter groups (``training.optim``), the schedule with its warm-up
(``train.schedule``), the AMP scaler and the EMA of the weights (``train.ema``), and which of them a
checkpoint saves (``stateful``). Built the same way by the Ray worker and by the plain loop of
``benchmarks/``, so both time the same code."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vfmkd_ray import run_files
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.heads.base import TeacherShapes
from vfmkd_ray.models.build import ModelParts, build_model
from vfmkd_ray.models.from_run import load_frozen_model
from vfmkd_ray.training.checkpointing import Stateful
from vfmkd_ray.training.ema import WeightAverage
from vfmkd_ray.training.kd_weights import AdaptiveKDWeights
from vfmkd_ray.training.optim import build_optimizer, gradient_scale, keep_groups_on_restore, parameter_groups
from vfmkd_ray.training.schedule import LrSchedule, ScheduleSpec


@dataclass
class TrainTask:
    parts: ModelParts
    optimizer: torch.optim.Optimizer
    scheduler: LrSchedule
    scaler: torch.amp.GradScaler
    use_amp: bool
    trainable: list[nn.Parameter]  # what the optimiser steps and the gradient clip sees
    ema: WeightAverage | None = None
    gradient_scale: float = 1.0  # the loss's factor before backward (optim.gradient_scale)
    kd_weights: AdaptiveKDWeights | None = None  # the terms' weights steered by their gradient share

    def stateful(self) -> dict[str, Stateful]:
        """What a checkpoint saves and restores, by name, in restore order (the schedule after the
        optimiser, whose saved rates it sets again). A new part is listed here."""
        parts: dict[str, Stateful] = {
            "model": self.parts.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }
        if self.ema is not None:
            parts["ema"] = self.ema
        if self.kd_weights:
            parts["kd_weights"] = self.kd_weights
        return parts

    def backbone_trainable(self) -> list[nn.Parameter]:
        """The backbone's trainable parameters: whose gradient a term's share is measured on."""
        return [p for p in self.parts.model.backbone.parameters() if p.requires_grad]

    def after_step(self) -> None:
        """What follows every optimiser step: the schedule's next rates, the EMA's next average."""
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.parts.model)

    @property
    def eval_model(self) -> nn.Module:
        """What validation, the pictures and the best files see: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.parts.model

    def describe(self) -> str:
        """The recipe in a few words, for the run's first line."""
        spec, groups = self.scheduler.spec, self.optimizer.param_groups
        sizes = "/".join(str(sum(p.numel() for p in g["params"])) for g in groups)
        warmup = spec.warmup_steps
        whole = " (the whole run)" if warmup >= self.scheduler.total_steps else ""
        summed = (
            f" on the loss summed over the global batch (x{self.gradient_scale:g})"
            if self.gradient_scale != 1.0
            else ""
        )
        return (
            f"{type(self.optimizer).__name__} lr {self.scheduler.base_lrs[0]:g}{summed} over "
            f"{'/'.join(str(g.get('name')) for g in groups)} parameters {sizes}, "
            f"{spec.kind} to x{spec.lr_factor:g} over {self.scheduler.total_steps} steps, warm-up "
            f"{warmup} steps{whole}, EMA {'on' if self.ema is not None else 'off'}"
            f"{', channels-last' if _is_channels_last(self.parts.model) else ''}"
        )

    def write_best(self, run_dir: str, config: dict) -> dict[str, str]:
        """The best files (``run_files.write_best``) of what validation scored: the EMA when kept."""
        return run_files.write_best(run_dir, self.eval_model, config)


def _is_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolution kernels are in channels-last memory (``train.channels_last``).
    A depthwise or 1x1 kernel is both layouts at once and tells nothing."""
    kernels = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and min(p.shape[2:]) > 1]
    return bool(kernels) and all(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in kernels
    )


def build_task(
    cfg: ExperimentConfig,
    shapes: TeacherShapes,
    total_steps: int,
    device: torch.device,
    steps_per_epoch: int | None = None,
    global_batch: int | None = None,
) -> TrainTask:
    """The model seeded from ``cfg.seed`` on ``device`` (the backbone frozen when
    ``train.freeze_backbone``; SyncBatchNorm on CUDA when ``train.sync_bn``; channels-last memory
    when ``train.channels_last``), ``train.optimizer`` over its trainable parameters in groups, the
    schedule over ``total_steps``, the run's planned steps, with warm-up counted in
    ``steps_per_epoch`` (default: ``total_steps`` over the epochs), weight decay and the loss's
    gradient scale for ``global_batch`` (default: the largest group's), the EMA when ``train.ema``,
    and AMP on CUDA when ``train.amp``."""
    train = cfg.train
    parts = build_model(cfg, shapes, load_run_model=load_frozen_model).to(device)
    if train.freeze_backbone:
        parts.model.freeze_backbone()
    if train.sync_bn and device.type == "cuda":
        parts.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(parts.model)
    if train.channels_last:
        # A convolution with channels-last weights writes channels-last activations whatever its
        # input's layout, so the images need no conversion; the EMA's copy below inherits it.
        parts.model.to(memory_format=torch.channels_last)
    groups = parameter_groups(parts.model)
    global_batch = global_batch or train.batch_size * train.max_workers
    optimizer = build_optimizer(groups, train, global_batch)
    keep_groups_on_restore(optimizer, [p for p in parts.model.parameters() if p.requires_grad])
    spec = ScheduleSpec(
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch or max(1, -(-total_steps // train.epochs)),
        kind=train.schedule,
        lr_factor=train.lr_factor,
        warmup_epochs=train.warmup_epochs,
        warmup_min_steps=train.warmup_min_steps,
        warmup_bias_lr=train.bias_warmup_lr(),
        warmup_momentum=train.warmup_momentum,
    )
    use_amp = train.amp and device.type == "cuda"
    loss_scale = gradient_scale(train, global_batch)
    # The loss reaches backward x loss_scale: AMP's first scale is that much lower, so the first
    # steps are not skipped for an overflow the larger loss alone would cause.
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16 / loss_scale, enabled=use_amp)
    ema = WeightAverage(parts.model, train.ema_momentum, train.ema_gamma) if train.ema else None
    return TrainTask(
        parts,
        optimizer,
        LrSchedule(optimizer, spec),
        scaler,
        use_amp,
        groups.all(),
        ema,
        loss_scale,
        AdaptiveKDWeights(parts.terms) or None,
    )
