"""``train_loop_per_worker``: the one Ray Train loop, for every combination of heads and KD terms.

Each worker restores the training state of the latest checkpoint, plans its steps for the world
size it has (``training.lockstep``: an elastic group resized since the checkpoint resumes with the plan
of its new size), builds the run's ``TrainTask`` (model, heads, terms, optimiser, a schedule over
those planned steps) and restores its parts. Per epoch: the epoch's training stream
(``training.streams.train_stream``: one view of the store), lock-step steps with checkpoints inside the
epoch (``training.epoch_pass``), a validation pass over its shard (reduced across workers), the epoch's
record, and one end-of-epoch report with rank 0's checkpoint (``training.checkpointing``). It knows no
head and no term: ``training.step`` asks each for its loss.
"""

from __future__ import annotations

import ray.train
import ray.train.torch

from vfmkd_ray.training.checkpointing import CheckpointManager
from vfmkd_ray.training.epoch_pass import EpochPass
from vfmkd_ray.training.epoch_record import epoch_line, epoch_record, write_pictures
from vfmkd_ray.training.fault_injection import maybe_fail_once
from vfmkd_ray.training.rank_zero import rank_zero_outputs
from vfmkd_ray.training.state import STATE_PART
from vfmkd_ray.training.streams import VAL_STREAM, train_stream
from vfmkd_ray.training.task import build_task
from vfmkd_ray.training.validation import validate
from vfmkd_ray.training.worker_job import WorkerJob


def train_loop_per_worker(loop_config: dict) -> None:
    job = WorkerJob.from_loop_config(loop_config)
    cfg, rank, run_dir = job.cfg, job.rank, job.plan.run_dir
    checkpoints = CheckpointManager(rank, run_dir)
    state = checkpoints.restore_state()
    planned = job.steps(state.epoch, state)
    task = build_task(
        cfg,
        job.teacher_shapes,
        planned.total_steps,
        job.device,
        planned.steps_per_epoch,
        planned.global_batch,
    )
    checkpoints.restore(task.stateful())
    parts = {**task.stateful(), STATE_PART: state}
    model = ray.train.torch.prepare_model(task.parts.model)
    feed = job.batch_feed(task)
    write_best = lambda: task.write_best(run_dir, job.config)  # noqa: E731
    with rank_zero_outputs(rank, cfg, run_dir, job.plan.tracking, job.lines) as kept:
        for epoch in range(state.epoch, cfg.train.epochs):
            maybe_fail_once(epoch, rank)
            steps = job.steps(epoch, state)
            job.start_epoch(epoch, state, steps, task)
            train_pass = EpochPass(model, feed, task, cfg, state, steps, job, checkpoints, parts)
            train_pass.run(ray.train.get_dataset_shard(train_stream(cfg, epoch)), epoch)
            coco = job.in_loop_coco(task, epoch)
            validation = validate(task, ray.train.get_dataset_shard(VAL_STREAM), feed, epoch + 1, coco)
            record = epoch_record(job, epoch, task, train_pass, validation)
            improved = state.finish_epoch(train_pass.steps_done, record, cfg.train.best_metric)
            if task.kd_weights:
                job.steer_kd_weights(task, record, epoch)
            if rank == 0:
                write_pictures(run_dir, task, validation.first_batch, state.epoch)
            job.lines.say(epoch_line(record, cfg.train.epochs, improved))
            checkpoints.report_epoch_end(record, parts, state, improved, write_best)
            # After the checkpoint: an epoch replayed after a failure is not tracked twice.
            kept.after_epoch(state.history, record)
