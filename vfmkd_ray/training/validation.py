"""The validation pass of one worker over its shard of the validation split, after every epoch: the
losses, and on scored epochs the box heads' COCO scores (``training.in_loop_coco``)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.training.batch_feed import BatchFeed
from vfmkd_ray.training.in_loop_coco import InLoopCoco
from vfmkd_ray.training.step import check_finite, model_step
from vfmkd_ray.training.task import TrainTask


@dataclass(frozen=True)
class Validation:
    sums: dict[str, tuple[float, int]]  # per key: (sum over samples, samples), this worker's
    first_batch: Batch | None  # what heads draw their pictures from
    stored_bytes: int  # the stored bytes its rows cost
    scores: dict[str, float] = field(default_factory=dict)  # <head>/<COCO metric>, all workers'


@torch.no_grad()
def validate(
    task: TrainTask, shard, feed: BatchFeed, epoch: int, coco: InLoopCoco | None = None
) -> Validation:
    """The whole validation shard, on the EMA of the weights when the run keeps one, scored by
    ``coco`` too when given (a collective then: every worker passes one). Adaptive KD terms count
    at their configured weights, so ``val/loss`` compares across epochs. A non-finite loss stops
    the run: best-by-validation could not rank it."""
    with task.kd_weights.configured_weights() if task.kd_weights else nullcontext():
        return _validate(task, shard, feed, epoch, coco)


def _validate(task: TrainTask, shard, feed: BatchFeed, epoch: int, coco: InLoopCoco | None) -> Validation:
    model = task.eval_model
    model.eval()
    sums: dict[str, tuple[float, int]] = {}
    first, stored_bytes = None, 0
    for batch in feed.batches(shard, drop_last=False):
        first = first if first is not None else batch
        count = len(batch)
        stored_bytes += batch.stored_bytes
        values = {key: float(value) for key, value in model_step(model, batch, task.parts).items()}
        check_finite(values, batch, f"validation after epoch {epoch}")
        if coco is not None:
            coco.add(model, batch)
        for key, value in values.items():
            total, seen = sums.get(key, (0.0, 0))
            sums[key] = (total + value * count, seen + count)
    return Validation(sums, first, stored_bytes, coco.scores() if coco is not None else {})
