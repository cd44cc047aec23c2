"""``train_loop_per_worker``: the one Ray Train loop, for every combination of heads and KD terms.

Each worker builds the run's ``TrainTask`` (model, heads, terms, optimiser), restores the latest
checkpoint if there is one, and plans its steps for the world size it has (``train.lockstep``: an
elastic group resized since the checkpoint resumes with the plan of its new size). Per epoch: the
epoch's training stream (``train.streams.train_stream``: one view of the store), lock-step steps
with a checkpoint every ``train.checkpoint_every_steps`` (``train.epoch_pass``), a validation pass
over its shard (reduced across workers), and one ``ray.train.report`` with rank 0's checkpoint. It
knows no head and no term: ``train.step`` asks each for its loss.
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
from vfmkd_ray.train.collectives import (
    all_workers_have,
    mean_across_workers,
    report_checkpoint,
    restore_state,
)
from vfmkd_ray.train.data_position import DataPosition
from vfmkd_ray.train.epoch_pass import EpochPass
from vfmkd_ray.train.epoch_record import epoch_line, epoch_record, write_epoch_files
from vfmkd_ray.train.fault_injection import maybe_fail_once
from vfmkd_ray.train.lockstep import lockstep_plan
from vfmkd_ray.train.rank_zero import rank_zero_outputs
from vfmkd_ray.train.relay import WorkerLines
from vfmkd_ray.train.step import check_finite, model_step
from vfmkd_ray.train.step_clock import StepClock
from vfmkd_ray.train.streams import VAL_STREAM, train_stream
from vfmkd_ray.train.task import TrainTask, build_task


@dataclass(frozen=True)
class RunPlan:
    """What the driver decided for every worker; the steps follow from the world size."""

    run_dir: str
    train_samples: int  # streamed per epoch (training images x data.repeat)
    teacher_shapes: dict[str, dict[str, list[int]]]  # used teacher alias -> layer -> (C, H, W)
    codecs: dict[str, str]  # stored teacher alias -> its store's codec
    live: list[str]  # teachers without a store: run on every sample
    read_bytes: dict[str, int] = field(default_factory=dict)  # stream -> stored bytes a pass reads
    tracking: dict = field(default_factory=dict)  # a tune trial's parent run id and searched values


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["experiment"])
    plan = RunPlan(**loop_config["plan"])
    position: DataPosition | None = loop_config.get("position")
    rank = ray.train.get_context().get_world_rank()
    world_size = ray.train.get_context().get_world_size()
    device = ray.train.torch.get_device()
    shapes = {
        a: {layer: tuple(s) for layer, s in layers.items()} for a, layers in plan.teacher_shapes.items()
    }
    task = build_task(cfg, shapes, 1, device)
    state = restore_state(task.resumable())
    lines = WorkerLines(loop_config.get("relay"), rank)
    model = ray.train.torch.prepare_model(task.parts.model)
    feed = _feed(cfg, plan, task, device)
    bad_samples = BadSampleLog(storage.join(plan.run_dir, run_files.BAD_SAMPLES_DIR))
    val_shard = ray.train.get_dataset_shard(VAL_STREAM)
    views = cfg.store.views_per_image
    first_epoch = state.epoch
    with rank_zero_outputs(rank, cfg, plan.run_dir, plan.tracking, lines) as kept:
        for epoch in range(first_epoch, cfg.train.epochs):
            maybe_fail_once(epoch, rank)
            steps = lockstep_plan(
                plan.train_samples,
                cfg.train.batch_size,
                world_size,
                cfg.train.epochs,
                epoch,
                state.step,
                state.epoch_samples,
            )
            # A relaunch with more epochs, or a resize, stretches or shrinks the schedule.
            task.scheduler.T_max = steps.total_steps
            repeated = _resume_position(position, rank, epoch, state, device)
            if epoch == first_epoch and (state.epoch_step or repeated):
                lines.say(
                    f"resumed epoch {epoch + 1} at step {steps.steps_before} ({steps.describe()}; "
                    f"{steps.steps_left} steps left; {repeated} steps repeated so far)"
                )
            elif epoch == first_epoch:
                lines.say(
                    f"worker 0 on {device} ({torch.get_num_threads()} torch threads): start at epoch "
                    f"{state.epoch}/{cfg.train.epochs}, {steps.describe()}, heads "
                    f"{list(task.parts.heads) or 'none'}, terms {list(task.parts.terms) or 'none'}, AMP "
                    f"{task.use_amp}"
                )
            started, clock = time.monotonic(), StepClock()
            lines.epoch_started(f"epoch {epoch + 1}/{cfg.train.epochs}", steps.steps_per_epoch)
            train_pass = EpochPass(model, feed, task, cfg, state, steps, rank, plan.run_dir, lines, position)
            train_pass.run(ray.train.get_dataset_shard(train_stream(epoch, views)), epoch, clock)
            trained = time.monotonic()
            val_sums, first_val, val_bytes = _evaluate(task, val_shard, feed, epoch + 1)
            train_means = train_pass.epoch_means(device)
            used = (
                mean_across_workers({"b": (train_pass.stored_bytes + val_bytes, 1)}, device)["b"] * world_size
            )
            state.epoch, state.step = epoch + 1, state.step + train_pass.steps_done
            val_means = mean_across_workers(val_sums, device)
            record = epoch_record(
                state, task, train_means, val_means, (started, trained), clock, world_size, device
            )
            read = plan.read_bytes.get(train_stream(epoch, views), 0) + plan.read_bytes.get(VAL_STREAM, 0)
            repeated = position.end_epoch() if position is not None and rank == 0 else 0
            record |= {
                "world_size": world_size,
                "global_batch": steps.global_batch,
                "train/steps_repeated": repeated,
                "data/stored_bytes_read": read,
                "data/stored_bytes_used": round(used),
                "data/read_per_used": round(read / used, 4) if used else 0.0,
            }
            if rank == 0:
                record["data/bad_samples"] = bad_samples.count()
            state.history.append(record)
            state.epoch_step, state.epoch_samples, state.epoch_trained, state.epoch_sums = 0, 0, [], {}
            improved = record["val/loss"] < state.best_val_loss
            state.best_val_loss = min(state.best_val_loss, record["val/loss"])
            if rank == 0:
                write_epoch_files(plan.run_dir, cfg, task, improved, first_val, state.epoch)
            lines.say(epoch_line(record, cfg.train.epochs, improved))
            report_checkpoint(rank, plan.run_dir, state, record, task.resumable())
            # After the checkpoint: an epoch replayed after a failure is not tracked twice.
            kept.after_epoch(state.history, record)


def _resume_position(position: DataPosition | None, rank: int, epoch: int, state, device) -> int:
    """Rank 0 tells the training stream's decode stage which rows this epoch already trained on
    (none at an epoch's start), before any worker asks it for rows; returns the steps repeated."""
    repeated = 0
    if position is not None and rank == 0:  # state.epoch_* are reset at every epoch's end
        repeated = position.resume(epoch, state.epoch_step, state.epoch_trained)
    all_workers_have(True, device)  # a barrier: no worker reads before the position is set
    return repeated


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


@torch.no_grad()
def _evaluate(task: TrainTask, shard, feed: BatchFeed, epoch: int):
    """The whole validation shard: per-key (sum over samples, samples), its first batch and the
    stored bytes its rows cost. A non-finite loss stops the run: best-by-validation could not rank
    it."""
    task.parts.model.eval()
    sums: dict[str, tuple[float, int]] = {}
    first, stored_bytes = None, 0
    for batch in feed.batches(shard, drop_last=False):
        first = first if first is not None else batch
        count = len(batch)
        stored_bytes += batch.stored_bytes
        values = {key: float(value) for key, value in model_step(task.parts.model, batch, task.parts).items()}
        check_finite(values, batch, f"validation after epoch {epoch}")
        for key, value in values.items():
            total, seen = sums.get(key, (0.0, 0))
            sums[key] = (total + value * count, seen + count)
    return sums, first, stored_bytes
