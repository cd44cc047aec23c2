"""The learning-rate (and momentum) schedule, in closed form: the values at step ``t`` are a function
of ``t`` and the plan only, so a restore sets them from the saved step count.

After warm-up, a ``cosine`` or ``linear`` decay from each group's base rate to ``lr_factor`` times it
over the run's planned steps (MMYOLO's ``cosine_fn`` and ``linear_fn`` of the epoch, here of the
step: the rate changes every step, not at epoch ends). Warm-up is MMYOLO's
``YOLOv5ParamSchedulerHook``: over max(``warmup_epochs`` epochs, ``warmup_min_steps``) steps each
group's rate rises linearly to what the decay gives at that step, from 0, or from
``warmup_bias_lr`` for the group named ``bias`` (``training.optim``), and SGD's momentum rises from
``warmup_momentum`` to its own. ``warmup_epochs`` 0: no warm-up.

The plan (``training.lockstep``) is made before the schedule is built, from the restored training
state and the world size the worker group has, so a relaunch with more epochs or an elastic resize
follows its new plan by construction instead of patching the schedule afterwards. Its state is the
number of steps taken; a checkpoint of torch's ``CosineAnnealingLR`` (its ``last_epoch``) restores
too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class ScheduleSpec:
    total_steps: int  # the run's planned steps
    steps_per_epoch: int  # at the group's size: what warm-up's epochs count in
    kind: Literal["cosine", "linear"] = "cosine"
    lr_factor: float = 0.0  # the last step's rate over the base rate
    warmup_epochs: float = 0.0
    warmup_min_steps: int = 0
    warmup_bias_lr: float = 0.0
    warmup_momentum: float = 0.8

    @property
    def warmup_steps(self) -> int:
        if self.warmup_epochs <= 0:
            return 0
        return max(round(self.warmup_epochs * self.steps_per_epoch), self.warmup_min_steps)


def decay_factor(kind: str, progress: float, lr_factor: float) -> float:
    """The base rate's multiplier at ``progress`` in [0, 1] of the run: 1 at 0, ``lr_factor`` at 1."""
    if kind == "linear":
        return (1.0 - progress) * (1.0 - lr_factor) + lr_factor
    return (1.0 - math.cos(math.pi * progress)) / 2.0 * (lr_factor - 1.0) + 1.0


class LrSchedule:
    def __init__(self, optimizer: torch.optim.Optimizer, spec: ScheduleSpec):
        self.optimizer, self.spec = optimizer, spec
        self.total_steps = max(1, spec.total_steps)
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.base_momenta = [group.get("momentum") for group in optimizer.param_groups]
        self.steps = 0
        self._apply()

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"] if "steps" in state else state["last_epoch"])
        self._apply()

    def _apply(self) -> None:
        spec, t = self.spec, self.steps
        progress = min(t, self.total_steps) / self.total_steps
        factor = decay_factor(spec.kind, progress, spec.lr_factor)
        warmup = spec.warmup_steps
        for group, base, momentum in zip(
            self.optimizer.param_groups, self.base_lrs, self.base_momenta, strict=True
        ):
            target = base * factor
            if t >= warmup:
                group["lr"] = target
                if momentum is not None:
                    group["momentum"] = momentum
                continue
            share = t / warmup
            start = spec.warmup_bias_lr if group.get("name") == "bias" else 0.0
            group["lr"] = start + (target - start) * share
            if momentum is not None:
                group["momentum"] = spec.warmup_momentum + (momentum - spec.warmup_momentum) * share
