"""What one Ray Train worker knows of its run: the driver's decisions (``RunPlan``), the config, its
rank in the worker group it is part of, its device and its line to the driver's console; and what
follows from them: the lock-step steps of an epoch, the batch feed, and the start of each epoch
(the data position of an interrupted one, and the line that says where the run stands)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray.train
import ray.train.torch
import torch

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.coco import read_dataset
from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.heads.base import TeacherShapes
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.training.batch_feed import BatchFeed
from vfmkd_ray.training.collectives import all_workers_have
from vfmkd_ray.training.data_position import DataPosition
from vfmkd_ray.training.in_loop_coco import InLoopCoco, box_heads, evaluates
from vfmkd_ray.training.lockstep import LockstepPlan, lockstep_plan
from vfmkd_ray.training.relay import WorkerLines
from vfmkd_ray.training.state import TrainingState
from vfmkd_ray.training.task import TrainTask


@dataclass(frozen=True)
class RunPlan:
    """What the driver decided for every worker; the steps follow from the world size."""

    run_dir: str
    train_samples: int  # streamed per epoch (training images x data.repeat)
    teacher_shapes: dict[str, dict[str, list[int]]]  # used teacher alias -> layer -> (C, H, W)
    codecs: dict[str, str]  # stored teacher alias -> its store's codec
    live: list[str]  # teachers without a store: run on every sample
    # stored teacher alias -> layer -> [mean, std] per channel (store.channel_stats), where kept
    channel_stats: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    # <alias>/<layer> -> packed PHI-S transform (store.phi_s) of each target a phi_s term reads
    phi_s: dict[str, Any] = field(default_factory=dict)
    read_bytes: dict[str, int] = field(default_factory=dict)  # stream -> stored bytes a pass reads
    tracking: dict = field(default_factory=dict)  # a tune trial's parent run id and searched values


@dataclass
class WorkerJob:
    cfg: ExperimentConfig
    config: dict[str, Any]  # cfg as plain JSON values (what best_model.pth records)
    plan: RunPlan
    position: DataPosition | None  # None in a Tune trial: its epochs are its unit
    rank: int
    world_size: int
    device: torch.device
    lines: WorkerLines
    announced: bool = False
    _coco: InLoopCoco | None = None

    @staticmethod
    def from_loop_config(loop_config: dict) -> WorkerJob:
        context = ray.train.get_context()
        rank = context.get_world_rank()
        return WorkerJob(
            cfg=ExperimentConfig.model_validate(loop_config["experiment"]),
            config=loop_config["experiment"],
            plan=RunPlan(**loop_config["plan"]),
            position=loop_config.get("position"),
            rank=rank,
            world_size=context.get_world_size(),
            device=ray.train.torch.get_device(),
            lines=WorkerLines(loop_config.get("relay"), rank),
        )

    @property
    def teacher_shapes(self) -> TeacherShapes:
        return {
            a: {layer: tuple(s) for layer, s in layers.items()}
            for a, layers in self.plan.teacher_shapes.items()
        }

    def steps(self, epoch: int, state: TrainingState) -> LockstepPlan:
        """The lock-step plan of ``epoch`` (0-based) for this group's size, from where ``state`` is."""
        train = self.cfg.train
        return lockstep_plan(
            self.plan.train_samples,
            train.batch_size,
            self.world_size,
            train.epochs,
            epoch,
            state.step,
            state.epoch_samples,
        )

    def batch_feed(self, task: TrainTask) -> BatchFeed:
        """Teachers run in the worker for online samples (stored teachers, only when some may be
        online) and for every sample (live teachers)."""
        cfg, plan = self.cfg, self.plan
        may_go_online = cfg.distill.online_ratio > 0 or cfg.data.missing_features == "online"
        stored = list(plan.codecs) if may_go_online else []
        teachers = {
            alias: build_teacher(cfg.teachers[alias]).to(self.device) for alias in [*stored, *plan.live]
        }
        return BatchFeed(
            frozenset(task.parts.teacher_keys()),
            plan.codecs,
            self.device,
            cfg.train.batch_size,
            cfg.train.prefetch_batches,
            stored_teachers={a: teachers[a] for a in stored},
            live_teachers={a: teachers[a] for a in plan.live},
            shuffle_buffer=cfg.data.shuffle_buffer if cfg.data.shuffle else 0,
            channel_stats={
                feature_key(alias, layer): torch.tensor(stats)
                for alias, layers in self.plan.channel_stats.items()
                for layer, stats in layers.items()
            },
            phi_s={key: torch.as_tensor(packed) for key, packed in self.plan.phi_s.items()},
        )

    def in_loop_coco(self, task: TrainTask, epoch: int) -> InLoopCoco | None:
        """The COCO scorer of epoch ``epoch`` (0-based) when it is scored and the run has a box
        head (one per worker attempt: rank 0 reads the annotations once)."""
        train, augment = self.cfg.train, self.cfg.data.augment
        # The close-mosaic epochs are each scored, as MMYOLO's: the best one is usually among them.
        closing = augment.pipeline != "none" and not augment.mosaic_at(epoch, train.epochs)
        if not box_heads(task.parts.heads) or not evaluates(
            epoch + 1, train.epochs, train.eval_every_epochs, closing
        ):
            return None
        if self._coco is None:
            data = self.cfg.data
            self._coco = InLoopCoco(
                task.parts.heads, lambda: (read_dataset(data), data.val_fraction), self.rank
            )
        return self._coco

    def steer_kd_weights(self, task: TrainTask, record: dict[str, float], epoch: int) -> None:
        """The adaptive terms' weights for epoch ``epoch + 1`` from epoch ``epoch``'s record (every
        worker computes the same from the same reduced record), said when they move."""
        augment, epochs = self.cfg.data.augment, self.cfg.train.epochs
        next_is_mosaic = augment.mosaic_at(epoch + 1, epochs) if augment.pipeline != "none" else None
        for name, (old, new) in task.kd_weights.end_epoch(record, next_is_mosaic).items():
            share = record.get(f"grad_share/{name}", float("nan"))
            self.lines.say(f"kd weight {name}: {old:.4g} -> {new:.4g} (gradient share {share:.3f})")

    def start_epoch(self, epoch: int, state: TrainingState, steps: LockstepPlan, task: TrainTask) -> None:
        """Rank 0 tells the training stream's decode stage which rows this epoch already trained on
        (none at an epoch's start) before any worker asks it for rows; the first epoch of this
        attempt says where the run stands, and the epoch's bar starts."""
        repeated = 0
        if self.position is not None and self.rank == 0:  # state.epoch_* are reset at every epoch's end
            repeated = self.position.resume(epoch, state.epoch_step, state.epoch_trained)
        all_workers_have(True, self.device)  # a barrier: no worker reads before the position is set
        if not self.announced and (state.epoch_step or repeated):
            self.lines.say(
                f"resumed epoch {epoch + 1} at step {steps.steps_before} ({steps.describe()}; "
                f"{steps.steps_left} steps left; {repeated} steps repeated so far)"
            )
        elif not self.announced:
            self.lines.say(
                f"worker 0 on {self.device} ({torch.get_num_threads()} torch threads): start at epoch "
                f"{state.epoch}/{self.cfg.train.epochs}, {steps.describe()}, heads "
                f"{list(task.parts.heads) or 'none'}, terms {list(task.parts.terms) or 'none'}, AMP "
                f"{task.use_amp}; {task.describe()}"
            )
        self.announced = True
        self.lines.epoch_started(f"epoch {epoch + 1}/{self.cfg.train.epochs}", steps.steps_per_epoch)
