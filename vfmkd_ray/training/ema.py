"""An exponential moving average of the model's weights (``train.ema``): MMYOLO's ``EMAHook`` with
``ExpMomentumEMA`` and ``update_buffers=True``. After every optimiser step each floating-point
parameter and buffer moves towards the model's by

    momentum(s) = (1 - m) * exp(-(1 + s) / gamma) + m,    averaged.lerp_(current, momentum(s))

at update ``s`` (the first update copies), so the average follows the model closely at first and
settles to ``m`` (1e-4) over a few ``gamma`` (2,000) steps. Integer buffers (batch-norm counts) are
copied. It is what validation, the best files and export see, and one of the stateful parts every
checkpoint saves (``TrainTask.stateful``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def ema_momentum(update: int, momentum: float, gamma: float) -> float:
    """The interpolation weight towards the current model at update ``update`` (0-based)."""
    return (1.0 - momentum) * math.exp(-float(1 + update) / gamma) + momentum


class WeightAverage:
    def __init__(self, model: nn.Module, momentum: float = 1e-4, gamma: float = 2000.0):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.momentum, self.gamma = momentum, gamma
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step towards ``model`` (the same architecture, not DDP-wrapped)."""
        averaged = self._tensors(self.module)
        current = self._tensors(model)
        weight = ema_momentum(self.updates, self.momentum, self.gamma)
        for name, tensor in averaged.items():
            source = current[name].detach().to(tensor.device)
            if self.updates == 0 or not tensor.dtype.is_floating_point:
                tensor.copy_(source)
            else:
                tensor.lerp_(source.to(tensor.dtype), weight)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])

    @staticmethod
    def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}
