"""The Ray-free training step: one forward of the model, every head's loss and every feature-KD
term, weighted and summed, and the optimiser update.

``model_step`` returns ``{"loss": total, "loss/<head or term>": value, "<head>/<diagnostic>": value,
"<diagnostic>/<term>": value}``; only ``loss`` carries gradients. It knows no head and no term:
each supplies its loss (``TaskHead.loss``, ``LossTerm.__call__``).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from vfmkd_ray.batch import Batch
from vfmkd_ray.models.build import ModelParts
from vfmkd_ray.training.kd_weights import GRAPH_PREFIX
from vfmkd_ray.training.task import TrainTask


class NonFiniteLossError(ValueError):
    """A step produced a NaN or infinite loss; the message names the losses that were, the batch's
    images and (added by the loop) the epoch and step."""


def check_finite(values: dict[str, float], batch: Batch, where: str) -> None:
    """Raises ``NonFiniteLossError`` when ``values["loss"]`` is NaN or infinite."""
    if math.isfinite(values["loss"]):
        return
    bad = {k: v for k, v in values.items() if k.startswith("loss") and not math.isfinite(v)}
    images = f" on images {list(ids)}" if (ids := batch.image_ids()) else ""
    raise NonFiniteLossError(
        f"{where}: the loss is not finite {bad}{images}; the last checkpoint holds the weights from "
        "before (lower train.lr, or check these images' features: vfmkd verify --all)"
    )


def model_step(
    model: nn.Module, batch: Batch, parts: ModelParts, keep_graph: bool = False
) -> dict[str, torch.Tensor]:
    """``model`` is ``parts.model``, DDP-wrapped or not: the first pass goes through the wrapper, the
    heads' second passes (crops, prompts) through the module inside it. ``keep_graph``: also each
    term's weighted loss with its graph, ``graph/<term>`` (``training.kd_weights`` probes them)."""
    inner = model.module if hasattr(model, "module") else model
    out = model(batch.images_BCHW)
    total = out.participation()
    results: dict[str, torch.Tensor] = {}
    for name, head in parts.heads.items():
        losses = head.loss(inner.heads[name], out.heads[name], batch, partial(inner.head_output, name))
        total = total + head.weight * losses["loss"].float()
        results[f"loss/{name}"] = losses["loss"].detach().float()
        results |= {f"{name}/{key}": value.detach().float() for key, value in losses.items() if key != "loss"}
    for name, term in parts.terms.items():
        value, diagnostics = term(out.features.adapted[name], batch)
        weighted = term.weight * value.float()
        total = total + weighted
        if keep_graph:
            results[f"{GRAPH_PREFIX}{name}"] = weighted
        results[f"loss/{name}"] = value.detach().float()
        results |= {f"{key}/{name}": v.detach().float() for key, v in diagnostics.items()}
    results["loss"] = total
    return results


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    parameters: list[nn.Parameter],
    grad_clip_norm: float,
    loss_scale: float = 1.0,
) -> torch.Tensor:
    """Backward of ``loss`` x ``loss_scale`` (``optim.gradient_scale``; also scaled under AMP),
    unscale, clip, step; returns the pre-clip gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss * loss_scale).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return grad_norm


def train_step(
    model: nn.Module, batch: Batch, task: TrainTask, grad_clip_norm: float, where: str = "a training step"
) -> dict[str, float]:
    """One optimiser step of the training loop; every output comes back as a host float, which also
    waits for the device.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite (named per head and term, with ``where`` and
            the batch's image ids). Checked after the update, so the step costs no extra device
            sync; the run stops and its last checkpoint still holds the weights from before.
    """
    probing = task.kd_weights.probing(task.scheduler.steps) if task.kd_weights else []
    with torch.autocast(batch.images_BCHW.device.type, enabled=task.use_amp):
        out = model_step(model, batch, task.parts, keep_graph=bool(probing))
    if probing:
        scale = lambda loss: task.scaler.scale(loss * task.gradient_scale)  # noqa: E731
        out |= task.kd_weights.probe(out, probing, task.backbone_trainable(), scale)
        out = {key: value for key, value in out.items() if not key.startswith(GRAPH_PREFIX)}
    out["data/online_share"] = torch.tensor(batch.num_online / len(batch))
    optimizer_step(
        out["loss"], task.optimizer, task.scaler, task.trainable, grad_clip_norm, task.gradient_scale
    )
    task.after_step()
    values = {key: float(value.detach()) for key, value in out.items()}
    check_finite(values, batch, where)
    return values
