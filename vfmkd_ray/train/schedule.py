"""The learning-rate schedule: a cosine from each parameter group's base rate to 0 over the run's
planned steps, in closed form (the rate at step ``t`` is a function of ``t`` and the plan only).

The plan (``train.lockstep``) is made before the schedule is built, from the restored training
state and the world size the worker group has, so a relaunch with more epochs or an elastic resize
follows its new plan by construction instead of patching the schedule afterwards. Its state is the
number of steps taken; a checkpoint of torch's ``CosineAnnealingLR`` (its ``last_epoch``) restores
too.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class CosineSchedule:
    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int):
        self.optimizer, self.total_steps = optimizer, max(1, total_steps)
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
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
        progress = min(self.steps, self.total_steps) / self.total_steps
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
