"""What an epoch leaves behind: its record (what metrics.csv, Ray Train's report and Tune see), its
line for the person, and rank 0's pictures of the heads that draw (the checkpoint, the metrics log
and the best files are ``training.checkpointing``'s)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from vfmkd_ray import run_files, storage
from vfmkd_ray.data.bad_samples import BAD_SAMPLES_DIR, BadSampleLog
from vfmkd_ray.training.collectives import max_across_workers, mean_across_workers
from vfmkd_ray.training.step_clock import StepClock, peak_rss_mb
from vfmkd_ray.training.streams import VAL_STREAM, train_stream
from vfmkd_ray.training.task import TrainTask
from vfmkd_ray.training.validation import Validation

if TYPE_CHECKING:
    from vfmkd_ray.training.epoch_pass import EpochPass
    from vfmkd_ray.training.worker_job import WorkerJob


def epoch_record(
    job: WorkerJob, epoch: int, task: TrainTask, train_pass: EpochPass, validation: Validation
) -> dict[str, float]:
    """The record of epoch ``epoch`` (0-based), after its training pass and validation: every
    worker's means, the times, the costs, the bytes read against the bytes used and, on rank 0, the
    samples skipped so far (a collective: every worker calls it)."""
    device, world_size = job.device, job.world_size
    val_means = mean_across_workers(validation.sums, device)
    used_by_one = mean_across_workers({"b": (train_pass.stored_bytes + validation.stored_bytes, 1)}, device)
    used = used_by_one["b"] * world_size
    read = job.plan.read_bytes.get(train_stream(job.cfg, epoch), 0) + job.plan.read_bytes.get(VAL_STREAM, 0)
    started, trained, now = train_pass.started, train_pass.ended, time.monotonic()
    record = {
        "epoch": epoch + 1,
        "step": train_pass.state.step + train_pass.steps_done,
        "lr": task.scheduler.get_last_lr()[0],
        "seconds": round(now - started, 2),
        "seconds/train": round(trained - started, 2),
        "seconds/val": round(now - trained, 2),
        **{f"train/{k}": v for k, v in train_pass.epoch_means(device).items()},
        **{f"val/{k}": v for k, v in val_means.items()},
        **validation.scores,
        **_step_costs(train_pass.clock, world_size, device),
        "world_size": world_size,
        "data/mosaic": float(job.cfg.data.augment.mosaic_at(epoch, job.cfg.train.epochs)),
        "global_batch": train_pass.steps.global_batch,
        "train/steps_repeated": job.position.end_epoch() if job.position is not None and job.rank == 0 else 0,
        "data/stored_bytes_read": read,
        "data/stored_bytes_used": round(used),
        "data/read_per_used": round(read / used, 4) if used else 0.0,
    }
    if task.kd_weights:
        record |= task.kd_weights.record_fields({k.removeprefix("train/"): v for k, v in record.items()})
    if job.rank == 0:
        record["data/bad_samples"] = BadSampleLog(storage.join(job.plan.run_dir, BAD_SAMPLES_DIR)).count()
    return record


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


def epoch_line(record: dict, epochs: int, improved: bool) -> str:
    heads = "  ".join(
        f"{k.removeprefix('val/')} {v:.4f}"
        for k, v in record.items()
        if k.startswith("val/loss/") or k.startswith("val/cos") or k.endswith("/mAP")
    )
    return (
        f"epoch {record['epoch']}/{epochs}  train loss {record['train/loss']:.4f}  "
        f"val loss {record['val/loss']:.4f}  {heads}"
        f"  ({record['seconds']:.1f}s, {record['throughput/train_images_per_s']:.1f} img/s)"
        + ("  * best" if improved else "")
    )


def step_status(step_out: dict[str, float], images_per_s: float) -> str:
    """The epoch bar's text after a step: its loss, each term's cosine, the job's images/s."""
    cosines = [f"{k} {v:.3f}" for k, v in step_out.items() if k.startswith("cos/")]
    return "  ".join([f"loss {step_out['loss']:.4f}", *cosines, f"{images_per_s:.1f} img/s"])


def write_pictures(run_dir: str, task: TrainTask, first_val, epoch: int) -> None:
    """The pictures of the heads that draw (YOLC's crops), from the first validation batch."""
    if first_val is None:
        return
    model = task.eval_model
    for name, head in task.parts.heads.items():
        with torch.no_grad():
            pictures = head.pictures(
                model.heads[name], first_val, lambda images, n=name: model.head_output(n, images)
            )
        for picture, png in pictures.items():
            run_files.write_picture(run_dir, epoch, name, picture, png)
