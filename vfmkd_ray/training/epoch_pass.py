"""One epoch's training steps on one worker, with checkpoints inside the epoch.

Every ``train.checkpoint_every_steps`` steps (unset: chosen after the first steps for about one
checkpoint per ``lockstep.AUTO_CHECKPOINT_S``) the workers gather the sample keys they trained on
since the last one and rank 0 reports a checkpoint holding the model, the optimiser and the epoch's
data position (steps, samples, keys, partial train sums). A restore resumes the epoch there:
``training.data_position`` keeps the trained rows out of the stream, so a failure repeats at most the
steps since the last checkpoint and no sample twice beyond them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.epoch_order import worker_shuffle_seed
from vfmkd_ray.training.batch_feed import BatchFeed
from vfmkd_ray.training.checkpointing import CheckpointManager, Stateful
from vfmkd_ray.training.collectives import (
    all_workers_have,
    gather_across_workers,
    max_across_workers,
    mean_across_workers,
    totals_across_workers,
)
from vfmkd_ray.training.epoch_record import step_status
from vfmkd_ray.training.fault_injection import hold_after_step, maybe_kill_once, trace_step
from vfmkd_ray.training.lockstep import AUTO_PROBE_STEPS, LockstepPlan, automatic_interval
from vfmkd_ray.training.state import STATE_PART, TrainingState
from vfmkd_ray.training.step import train_step
from vfmkd_ray.training.step_clock import StepClock
from vfmkd_ray.training.task import TrainTask

if TYPE_CHECKING:
    from vfmkd_ray.training.worker_job import WorkerJob


class EpochPass:
    def __init__(
        self,
        model,
        feed: BatchFeed,
        task: TrainTask,
        cfg: ExperimentConfig,
        state: TrainingState,
        steps: LockstepPlan,
        job: WorkerJob,
        checkpoints: CheckpointManager,
        parts: dict[str, Stateful],
    ):
        self.model, self.feed, self.task, self.cfg, self.state = model, feed, task, cfg, state
        self.steps, self.rank, self.lines = steps, job.rank, job.lines
        self.position, self.checkpoints, self.parts = job.position, checkpoints, parts
        # The partial sums of a resumed epoch are all-worker totals: one worker carries them.
        carried = state.epoch_sums if job.rank == 0 else {}
        self.sums: dict[str, tuple[float, float]] = {k: (a, b) for k, (a, b) in carried.items()}
        self.steps_done = 0  # by this attempt
        self.stored_bytes = 0  # of the rows this worker trained on
        self.epoch_trained = list(state.epoch_trained)  # every worker's keys, up to the last checkpoint
        self.unsaved_keys: list[int] = []  # this worker's, since then
        self.interval = cfg.train.checkpoint_every_steps
        if job.position is None:  # a Tune trial: epochs are its unit (ASHA), no reports inside them
            self.interval = 0
        self.clock = StepClock()
        self.started = self.ended = 0.0  # of the pass, monotonic

    def run(self, shard, epoch: int) -> None:
        """Up to ``steps.steps_left`` steps of epoch ``epoch`` (0-based); fewer when a shard runs
        dry (skipped samples)."""
        self.model.train()
        shuffle_seed = worker_shuffle_seed(self.cfg.seed, epoch, self.rank)
        batches = self.feed.batches(shard, drop_last=True, shuffle_seed=shuffle_seed)
        clock = self.clock
        started = self.started = time.monotonic()
        while self.steps_done < self.steps.steps_left:
            batch = next(batches, None)
            if batch is not None:
                clock.batch_arrived()
            # Every worker takes the same number of steps, or DDP would wait forever on the others.
            if not all_workers_have(batch is not None, self.feed.device):
                break
            step = self.state.epoch_step + self.steps_done + 1  # 1-based, in the epoch
            shown = self.steps.steps_before + self.steps_done + 1  # in this group's plan
            where = f"epoch {epoch + 1} step {shown}/{self.steps.steps_per_epoch}"
            out = train_step(self.model, batch, self.task, self.cfg.train.grad_clip_norm, where)
            self.steps_done += 1
            for key, value in out.items():
                total, count = self.sums.get(key, (0.0, 0.0))
                self.sums[key] = (total + value, count + 1)
            self.stored_bytes += batch.stored_bytes
            keys = batch.sample_keys_B.tolist() if batch.sample_keys_B is not None else []
            self.unsaved_keys += keys
            trace_step(epoch + 1, step, self.rank, keys)
            clock.step_done(len(batch))
            if self.position is not None and self.rank == 0:
                self.position.reached(epoch, step)
            self.lines.step(shown, step_status(out, clock.images_per_s * self.steps.world_size))
            maybe_kill_once(epoch + 1, step, self.rank)
            if self.interval is None and self.steps_done == AUTO_PROBE_STEPS:
                self._choose_interval(time.monotonic() - started)
            if self.interval and step % self.interval == 0 and self.steps_done < self.steps.steps_left:
                self._checkpoint(epoch, step)
            hold_after_step(epoch + 1, step, self.rank)
        self.ended = time.monotonic()

    def epoch_means(self, device) -> dict[str, float]:
        return mean_across_workers(self.sums, device)

    def _choose_interval(self, seconds: float) -> None:
        step_s = max_across_workers(seconds / self.steps_done, self.feed.device)  # the same on every worker
        self.interval = automatic_interval(step_s, self.steps.steps_per_epoch)
        self.lines.say(
            f"in-epoch checkpoints: every {self.interval} steps ({step_s:.2f}s per step)"
            if self.interval
            else f"in-epoch checkpoints: none ({step_s:.2f}s per step: an epoch is shorter than that)"
        )

    def _checkpoint(self, epoch: int, step: int) -> None:
        """Every worker: the data position so far; rank 0: the checkpoint (a report on each)."""
        self.epoch_trained += gather_across_workers(self.unsaved_keys)
        self.unsaved_keys = []
        snapshot = self.state.in_epoch(
            self.steps_done,
            step,
            self.steps_done * self.steps.global_batch,
            self.epoch_trained,
            totals_across_workers(self.sums, self.feed.device),
        )
        record = {
            "epoch": epoch,
            "epoch_step": step,
            "step": snapshot.step,
            "world_size": self.steps.world_size,
        }
        self.checkpoints.report_inside_epoch(record, {**self.parts, STATE_PART: snapshot})
