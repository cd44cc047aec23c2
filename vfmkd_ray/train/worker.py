"""``train_loop_per_worker``: the Ray Train side of distillation, read as an outline.

Each worker builds the student, adapters and loss terms, restores the latest checkpoint if there is
one, then per epoch: a bounded number of steps over its shard of the store, a validation pass over
its shard (reduced across workers), and one ``ray.train.report`` with rank 0's checkpoint.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import ray.train
import ray.train.torch
import torch

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.bad_samples import BAD_SAMPLES_DIR, BadSampleLog
from vfmkd_ray.data.feature_keys import split_feature_key
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.pipeline import IMAGE_COLUMN, ONLINE_COLUMN, VALID_HW_COLUMN, teacher_column
from vfmkd_ray.losses.base import KDBatch, LossTerm
from vfmkd_ray.models.teachers import FrozenTeacher, build_teacher
from vfmkd_ray.models.teachers.ensemble import run_teachers
from vfmkd_ray.store import codecs
from vfmkd_ray.store.manifest import Manifest, layer_shapes
from vfmkd_ray.store.schema import feature_column, scale_column
from vfmkd_ray.train.collectives import (
    all_workers_have,
    max_across_workers,
    mean_across_workers,
    report_epoch,
    restore_state,
)
from vfmkd_ray.train.distiller import DistillerSetup, build_distiller
from vfmkd_ray.train.fault_injection import maybe_fail_once
from vfmkd_ray.train.run_files import write_backbone
from vfmkd_ray.train.step import kd_step, train_step
from vfmkd_ray.train.step_clock import StepClock, peak_rss_mb


@dataclass(frozen=True)
class RunPlan:
    """What the driver decided for every worker: identical step counts keep DDP in lock-step."""

    run_dir: str
    steps_per_epoch: int
    manifests: dict[str, dict]  # teacher alias -> its store's manifest, the primary teacher first


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["experiment"])
    plan = RunPlan(**loop_config["plan"])
    manifests = {alias: Manifest.model_validate(m) for alias, m in plan.manifests.items()}
    rank = ray.train.get_context().get_world_rank()
    world_size = ray.train.get_context().get_world_size()
    device = ray.train.torch.get_device()
    setup = build_distiller(cfg, layer_shapes(manifests), cfg.train.epochs * plan.steps_per_epoch, device)
    distiller, terms = setup.distiller, setup.terms
    resumable = setup.resumable()
    state = restore_state(resumable)
    if rank == 0:
        _log(
            f"worker 0 on {device} ({torch.get_num_threads()} torch threads): start at epoch "
            f"{state.epoch}/{cfg.train.epochs}, AMP {setup.use_amp}"
        )

    model = ray.train.torch.prepare_model(
        distiller, parallel_strategy_kwargs={"find_unused_parameters": not distiller.uses_every_level()}
    )
    bad_samples = BadSampleLog(storage.join(plan.run_dir, BAD_SAMPLES_DIR))
    online = cfg.distill.online_ratio > 0 or cfg.data.missing_features == "online"
    teachers = {alias: build_teacher(t).to(device) for alias, t in cfg.teachers.items()} if online else {}
    codecs_by_teacher = {alias: m.codec for alias, m in manifests.items()}
    feed = BatchFeed(
        terms, codecs_by_teacher, device, cfg.train.batch_size, cfg.train.prefetch_batches, teachers
    )
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(state.epoch, cfg.train.epochs):
        maybe_fail_once(epoch, rank)
        started = time.monotonic()
        clock = StepClock()
        train_sums = _train_epoch(model, train_shard, feed, plan.steps_per_epoch, setup, cfg, clock)
        trained = time.monotonic()
        val_sums = _evaluate(distiller, val_shard, feed)
        train_means = mean_across_workers(train_sums, device)
        steps_done = int(train_means.pop("steps"))
        state.epoch, state.step = epoch + 1, state.step + steps_done
        record = {
            "epoch": state.epoch,
            "step": state.step,
            "lr": setup.scheduler.get_last_lr()[0],
            "seconds": round(time.monotonic() - started, 2),
            "seconds/train": round(trained - started, 2),
            "seconds/val": round(time.monotonic() - trained, 2),
            **{f"train/{k}": v for k, v in train_means.items()},
            **{f"val/{k}": v for k, v in mean_across_workers(val_sums, device).items()},
            **_step_costs(clock, world_size, device),
        }
        if rank == 0:
            record["data/bad_samples"] = bad_samples.count()
        state.history.append(record)
        improved = record["val/loss"] < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, record["val/loss"])
        _report(rank, plan.run_dir, state, record, improved, distiller.student, resumable, cfg.train.epochs)


@dataclass(frozen=True)
class BatchFeed:
    """Turns a shard's torch batches into ``KDBatch``es on the device, decoding stored features."""

    terms: dict[str, LossTerm]
    codecs: dict[str, str]  # teacher alias -> its store's codec
    device: torch.device
    batch_size: int
    prefetch_batches: int
    # By alias, for samples marked online (never wrapped in DDP).
    teachers: dict[str, FrozenTeacher] = field(default_factory=dict)

    def batches(self, shard, drop_last: bool):
        for raw in shard.iter_torch_batches(
            batch_size=self.batch_size,
            drop_last=drop_last,
            prefetch_batches=self.prefetch_batches,
            # Ray copies each batch to the worker's device in its prefetch thread; from pinned
            # host memory that copy is asynchronous and faster.
            pin_memory=self.device.type == "cuda",
        ):
            yield self.to_kd_batch(raw)

    def to_kd_batch(self, raw: dict[str, torch.Tensor]) -> KDBatch:
        features = {}
        for key in {key for term in self.terms.values() for key in term.teacher_layers}:
            alias, layer = split_feature_key(key)
            scale = raw.get(teacher_column(alias, scale_column(layer)))
            features[key] = codecs.to_float32(
                raw[teacher_column(alias, feature_column(layer))].to(self.device),
                self.codecs[alias],
                None if scale is None else scale.to(self.device),
            )
        images = normalize(raw[IMAGE_COLUMN].to(self.device))
        online = raw[ONLINE_COLUMN].to(self.device).bool()
        num_online = int(online.sum())
        if num_online:
            if not self.teachers:
                raise RuntimeError("samples are marked online but the worker has no teachers")
            live = run_teachers(self.teachers, images[online])
            for key in features:
                features[key][online] = live[key].float()
        return KDBatch(
            images_BCHW=images,
            valid_hw_B2=raw[VALID_HW_COLUMN].to(self.device),
            teacher_features=features,
            num_online=num_online,
        )


def _step_costs(clock: StepClock, world_size: int, device) -> dict[str, float]:
    """The whole job's steady images/s (the workers' sum), mean wait for the first batch, and the
    largest peak resident memory of any worker."""
    means = mean_across_workers(
        {"rate": (clock.images_per_s, 1), "first_batch": (clock.first_batch_s, 1)}, device
    )
    return {
        "throughput/train_images_per_s": round(means["rate"] * world_size, 2),
        "seconds/first_batch": round(means["first_batch"], 2),
        "memory/peak_rss_mb": round(max_across_workers(peak_rss_mb(), device), 1),
    }


def _train_epoch(model, shard, feed, num_steps, setup: DistillerSetup, cfg, clock: StepClock):
    """Up to ``num_steps`` optimiser steps, fewer when a shard runs dry (skipped samples); ``clock``
    times them.

    Returns:
        Per-key (sum of step means, steps), plus ``steps`` itself.
    """
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
        out = train_step(model, batch, setup, cfg.train.grad_clip_norm)
        steps += 1
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + value
        clock.step_done(len(batch.images_BCHW))
    return {key: (total, steps) for key, total in sums.items()} | {"steps": (steps, 1)}


@torch.no_grad()
def _evaluate(distiller, shard, feed):
    """The whole validation shard; returns per-key (sum over samples, samples)."""
    distiller.eval()
    sums: dict[str, tuple[float, int]] = {}
    for batch in feed.batches(shard, drop_last=False):
        count = int(batch.images_BCHW.shape[0])
        for key, value in kd_step(distiller, batch, feed.terms).items():
            total, seen = sums.get(key, (0.0, 0))
            sums[key] = (total + float(value) * count, seen + count)
    return sums


def _report(rank, run_dir, state, record, improved, student, resumable, epochs) -> None:
    if rank == 0:
        if improved:
            write_backbone(run_dir, student.state_dict())
        _log_epoch(record, epochs, improved)
    report_epoch(rank, run_dir, state, record, resumable)


def _log_epoch(record: dict, epochs: int, improved: bool) -> None:
    _log(
        f"epoch {record['epoch']}/{epochs}  train loss {record['train/loss']:.4f}  "
        f"val loss {record['val/loss']:.4f}  "
        + "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val/cos"))
        + f"  ({record['seconds']:.1f}s, {record['throughput/train_images_per_s']:.1f} img/s)"
        + ("  * best" if improved else "")
    )


def _log(message: str) -> None:
    # The real stdout, which Ray forwards to the driver once; Ray Train's patched print would tee
    # the line through its logger as well and show it twice.
    print(f"[vfmkd train] {message}", file=sys.__stdout__, flush=True)
