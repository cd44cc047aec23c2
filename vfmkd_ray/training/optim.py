"""The optimiser of a run and its parameter groups, as MMYOLO's ``YOLOv5OptimizerConstructor``
builds them: weights that decay, then norm weights, then biases, the last two without weight decay
(decaying a batch-norm scale or a bias towards 0 only costs capacity). The bias group is last, as
MMYOLO's, because warm-up starts it from its own rate (``train.schedule``).

``sgd`` is MMYOLO's YOLOv8 optimiser: Nesterov momentum, weight decay scaled by the global batch
over ``train.base_batch`` when the global batch is larger (no scaling below it, as MMYOLO, which
would accumulate gradients there), applied to the gradient of the loss summed over the global batch
(``gradient_scale``). ``adamw`` decays the same group, unscaled, on the per-image loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vfmkd_ray.training.config import TrainConfig

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


def keep_groups_on_restore(
    optimizer: torch.optim.Optimizer, trainable_in_model_order: list[nn.Parameter]
) -> None:
    """Restoring a checkpoint keeps this optimiser's groups as built: a checkpoint from before the
    groups (one group over the trainable parameters in model order) is split into them, and each
    group's weight decay and name stay what this run's config and world size give (a checkpoint
    saved at another global batch holds another scaled weight decay)."""
    old_index = {id(p): i for i, p in enumerate(trainable_in_model_order)}
    built = [{key: group[key] for key in ("name", "weight_decay")} for group in optimizer.param_groups]

    def split_one_group(opt: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        saved = state["param_groups"]
        if len(saved) != 1 or len(opt.param_groups) == 1:
            return state
        settings = {key: value for key, value in saved[0].items() if key != "params"}
        groups = [
            {
                **settings,
                **{k: v for k, v in g.items() if k != "params"},
                "params": [old_index[id(p)] for p in g["params"]],
            }
            for g in opt.param_groups
        ]
        return {"state": state["state"], "param_groups": groups}

    def rebuild_settings(opt: torch.optim.Optimizer) -> None:
        for group, settings in zip(opt.param_groups, built, strict=True):
            group.update(settings)

    optimizer.register_load_state_dict_pre_hook(split_one_group)
    optimizer.register_load_state_dict_post_hook(rebuild_settings)


def scaled_weight_decay(train: TrainConfig, global_batch: int) -> float:
    """``train.weight_decay`` for ``global_batch``: MMYOLO's rule for ``sgd`` (times global batch x
    accumulation / ``train.base_batch``, where accumulation = round(base / global), at least 1),
    unscaled for ``adamw``."""
    if train.optimizer != "sgd":
        return train.weight_decay
    accumulate = max(round(train.base_batch / global_batch), 1)
    return train.weight_decay * global_batch * accumulate / train.base_batch


def gradient_scale(train: TrainConfig, global_batch: int) -> float:
    """What the step multiplies the loss by before backward: the global batch for ``sgd``, 1 for
    ``adamw``.

    The heads and KD terms report per-image losses (a weight means the same at any batch size).
    MMYOLO's ``YOLOv8Head`` multiplies its losses by ``num_imgs * world_size`` and Ultralytics' by
    the batch size, so their SGD learning rate, weight decay and gradient clip are in units of the
    batch-summed gradient: scaling the loss here (not the rates) makes ``lr: 0.01``,
    ``weight_decay: 5e-4`` and ``grad_clip_norm: 10`` mean what they mean there, for every term
    alike, so the terms' relative weights are untouched. Adam's update does not depend on the
    loss's scale, so ``adamw`` keeps 1.
    """
    return float(global_batch) if train.optimizer == "sgd" else 1.0


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
