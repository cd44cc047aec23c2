"""The optimiser of a run and its parameter groups, as MMYOLO's ``YOLOv5OptimizerConstructor``
builds them: weights that decay, then norm weights, then biases, the last two without weight decay
(decaying a batch-norm scale or a bias towards 0 only costs capacity). The bias group is last, as
MMYOLO's, because warm-up starts it from its own rate (``train.schedule``).

``sgd`` is MMYOLO's YOLOv8 optimiser: Nesterov momentum, weight decay scaled by the global batch
over ``train.base_batch`` when the global batch is larger (no scaling below it, as MMYOLO, which
would accumulate gradients there). ``adamw`` decays the same group, unscaled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vfmkd_ray.train.config import TrainConfig

# Modules whose own ``weight`` is a per-channel scale, not a projection.
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@dataclass(frozen=True)
class ParameterGroups:
    decay: list[nn.Parameter]  # weights of convolutions, linears, embeddings: decayed
    norm: list[nn.Parameter]  # norm scales and other 1-d parameters: not decayed
    bias: list[nn.Parameter]  # biases: not decayed; warm-up starts them from their own rate

    def all(self) -> list[nn.Parameter]:
        return [*self.decay, *self.norm, *self.bias]


def parameter_groups(model: nn.Module) -> ParameterGroups:
    """The trainable parameters of ``model`` by group, each once (a shared parameter in the group
    of its first owner)."""
    groups = ParameterGroups([], [], [])
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if name == "bias":
                groups.bias.append(param)
            elif isinstance(module, _NORMS) or param.ndim <= 1:
                groups.norm.append(param)
            else:
                groups.decay.append(param)
    return groups


def scaled_weight_decay(train: TrainConfig, global_batch: int) -> float:
    """``train.weight_decay`` for ``global_batch``: MMYOLO's rule for ``sgd`` (times global batch x
    accumulation / ``train.base_batch``, where accumulation = round(base / global), at least 1),
    unscaled for ``adamw``."""
    if train.optimizer != "sgd":
        return train.weight_decay
    accumulate = max(round(train.base_batch / global_batch), 1)
    return train.weight_decay * global_batch * accumulate / train.base_batch


def build_optimizer(groups: ParameterGroups, train: TrainConfig, global_batch: int) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``groups``, each named (``decay``, ``norm``, ``bias``: the schedule
    warms the bias group up from its own rate), empty ones kept so a checkpoint's groups always
    line up."""
    decay = scaled_weight_decay(train, global_batch)
    params = [
        {"name": "decay", "params": groups.decay, "weight_decay": decay},
        {"name": "norm", "params": groups.norm, "weight_decay": 0.0},
        {"name": "bias", "params": groups.bias, "weight_decay": 0.0},
    ]
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, nesterov=True)
    return torch.optim.AdamW(params, lr=train.lr)
