"""``train_loop_per_worker``: the one Ray Train loop, for every combination of heads and KD terms.

Each worker builds the run's ``TrainTask`` (model, heads, terms, optimiser), restores the latest
checkpoint if there is one, then per epoch: a bounded number of lock-step steps over its shard, a
validation pass over its shard (reduced across workers), and one ``ray.train.report`` with rank 0's
checkpoint. It knows no head and no term: ``train.step`` asks each for its loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ray.train
import ray.train.torch
import torch

from vfmkd_ray import run_files, storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.models.teachers import build_teacher
from vfmkd_ray.train.batch_feed import BatchFeed
from vfmkd_ray.train.collectives import all_workers_have, mean_across_workers, report_epoch, restore_state
from vfmkd_ray.train.epoch_record import epoch_line, epoch_record, step_status, write_epoch_files
from vfmkd_ray.train.fault_injection import maybe_fail_once
from vfmkd_ray.train.rank_zero import rank_zero_outputs
from vfmkd_ray.train.relay import WorkerLines
from vfmkd_ray.train.step import check_finite, model_step, train_step
from vfmkd_ray.train.step_clock import StepClock
from vfmkd_ray.train.task import TrainTask, build_task


@dataclass(frozen=True)
class RunPlan:
    """What the driver decided for every worker: identical step counts keep DDP in lock-step."""

    run_dir: str
    steps_per_epoch: int
    teacher_shapes: dict[str, dict[str, list[int]]]  # used teacher alias -> layer -> (C, H, W)
    codecs: dict[str, str]  # stored teacher alias -> its store's codec
    live: list[str]  # teachers without a store: run on every sample
    tracking: dict = field(default_factory=dict)  # a tune trial's parent run id and searched values


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["experiment"])
    plan = RunPlan(**loop_config["plan"])
    rank = ray.train.get_context().get_world_rank()
    world_size = ray.train.get_context().get_world_size()
    device = ray.train.torch.get_device()
    shapes = {
        a: {layer: tuple(s) for layer, s in layers.items()} for a, layers in plan.teacher_shapes.items()
    }
    total_steps = cfg.train.epochs * plan.steps_per_epoch
    task = build_task(cfg, shapes, total_steps, device)
    state = restore_state(task.resumable())
    task.scheduler.T_max = max(1, total_steps)  # a relaunch with more epochs stretches the schedule
    lines = WorkerLines(loop_config.get("relay"), rank)
    lines.say(
        f"worker 0 on {device} ({torch.get_num_threads()} torch threads): start at epoch "
        f"{state.epoch}/{cfg.train.epochs}, heads {list(task.parts.heads) or 'none'}, "
        f"terms {list(task.parts.terms) or 'none'}, AMP {task.use_amp}"
    )
    model = ray.train.torch.prepare_model(task.parts.model)
    feed = _feed(cfg, plan, task, device)
    bad_samples = BadSampleLog(storage.join(plan.run_dir, run_files.BAD_SAMPLES_DIR))
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    with rank_zero_outputs(rank, cfg, plan.run_dir, plan.tracking, lines) as kept:
        for epoch in range(state.epoch, cfg.train.epochs):
            maybe_fail_once(epoch, rank)
            started, clock = time.monotonic(), StepClock()
            lines.epoch_started(f"epoch {epoch + 1}/{cfg.train.epochs}", plan.steps_per_epoch)
            train_sums = _train_epoch(
                model, train_shard, feed, plan.steps_per_epoch, task, cfg, clock, epoch + 1, lines, world_size
            )
            trained = time.monotonic()
            val_sums, first_val = _evaluate(task, val_shard, feed, epoch + 1)
            train_means = mean_across_workers(train_sums, device)
            state.epoch, state.step = epoch + 1, state.step + int(train_means.pop("steps"))
            val_means = mean_across_workers(val_sums, device)
            record = epoch_record(
                state, task, train_means, val_means, (started, trained), clock, world_size, device
            )
            if rank == 0:
                record["data/bad_samples"] = bad_samples.count()
            state.history.append(record)
            improved = record["val/loss"] < state.best_val_loss
            state.best_val_loss = min(state.best_val_loss, record["val/loss"])
            if rank == 0:
                write_epoch_files(plan.run_dir, cfg, task, improved, first_val, state.epoch)
            lines.say(epoch_line(record, cfg.train.epochs, improved))
            report_epoch(rank, plan.run_dir, state, record, task.resumable())
            # After the checkpoint: an epoch replayed after a failure is not tracked twice.
            kept.after_epoch(state.history, record)


def _feed(cfg: ExperimentConfig, plan: RunPlan, task: TrainTask, device) -> BatchFeed:
    """Teachers run in the worker for online samples (stored teachers, only when some may be online)
    and for every sample (live teachers)."""
    may_go_online = cfg.distill.online_ratio > 0 or cfg.data.missing_features == "online"
    stored = list(plan.codecs) if may_go_online else []
    teachers = {alias: build_teacher(cfg.teachers[alias]).to(device) for alias in [*stored, *plan.live]}
    return BatchFeed(
        frozenset(task.parts.teacher_keys()),
        plan.codecs,
        device,
        cfg.train.batch_size,
        cfg.train.prefetch_batches,
        stored_teachers={a: teachers[a] for a in stored},
        live_teachers={a: teachers[a] for a in plan.live},
    )


def _train_epoch(
    model,
    shard,
    feed: BatchFeed,
    num_steps: int,
    task: TrainTask,
    cfg,
    clock: StepClock,
    epoch: int,
    lines: WorkerLines,
    world_size: int,
):
    """Up to ``num_steps`` optimiser steps, fewer when a shard runs dry (skipped samples); ``clock``
    times them and ``lines`` shows them. Returns per-key (sum of step means, steps), plus ``steps``
    itself."""
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    batches = feed.batches(shard, drop_last=True)
    while steps < num_steps:
        batch = next(batches, None)
        if batch is not None:
            clock.batch_arrived()
        # Every worker takes the same number of steps, or DDP would wait forever on the others.
        if not all_workers_have(batch is not None, feed.device):
            break
        where = f"epoch {epoch} step {steps + 1}/{num_steps}"
        out = train_step(model, batch, task, cfg.train.grad_clip_norm, where)
        steps += 1
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + value
        clock.step_done(len(batch))
        lines.step(steps, step_status(out, clock.images_per_s * world_size))
    return {key: (total, steps) for key, total in sums.items()} | {"steps": (steps, 1)}


@torch.no_grad()
def _evaluate(task: TrainTask, shard, feed: BatchFeed, epoch: int):
    """The whole validation shard: per-key (sum over samples, samples), and its first batch. A
    non-finite loss stops the run: best-by-validation could not rank it."""
    task.parts.model.eval()
    sums: dict[str, tuple[float, int]] = {}
    first = None
    for batch in feed.batches(shard, drop_last=False):
        first = first if first is not None else batch
        count = len(batch)
        values = {key: float(value) for key, value in model_step(task.parts.model, batch, task.parts).items()}
        check_finite(values, batch, f"validation after epoch {epoch}")
        for key, value in values.items():
            total, seen = sums.get(key, (0.0, 0))
            sums[key] = (total + value * count, seen + count)
    return sums, first
