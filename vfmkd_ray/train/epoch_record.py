"""What an epoch leaves behind: its record (what metrics.csv, Ray Train's report and Tune see),
its line for the person, and rank 0's files (the best backbone and model, the heads' pictures)."""

from __future__ import annotations

import time

import torch

from vfmkd_ray import run_files
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.run_files import TrainingState
from vfmkd_ray.train.collectives import max_across_workers, mean_across_workers
from vfmkd_ray.train.step_clock import StepClock, peak_rss_mb
from vfmkd_ray.train.task import TrainTask


def epoch_record(
    state: TrainingState,
    task: TrainTask,
    train_means: dict[str, float],
    val_means: dict[str, float],
    times: tuple[float, float],  # (epoch start, end of the training pass), monotonic
    clock: StepClock,
    world_size: int,
    device,
) -> dict[str, float]:
    started, trained = times
    now = time.monotonic()
    return {
        "epoch": state.epoch,
        "step": state.step,
        "lr": task.scheduler.get_last_lr()[0],
        "seconds": round(now - started, 2),
        "seconds/train": round(trained - started, 2),
        "seconds/val": round(now - trained, 2),
        **{f"train/{k}": v for k, v in train_means.items()},
        **{f"val/{k}": v for k, v in val_means.items()},
        **_step_costs(clock, world_size, device),
    }


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
        if k.startswith("val/loss/") or k.startswith("val/cos")
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


def write_epoch_files(
    run_dir: str, cfg: ExperimentConfig, task: TrainTask, improved: bool, first_val, epoch: int
):
    """The best backbone and model when validation improved, and the heads' pictures."""
    model = task.parts.model
    if improved:
        run_files.write_best(run_dir, model, cfg.model_dump(mode="json"))
    if first_val is None:
        return
    for name, head in task.parts.heads.items():
        with torch.no_grad():
            pictures = head.pictures(
                model.heads[name], first_val, lambda images, n=name: model.head_output(n, images)
            )
        for picture, png in pictures.items():
            run_files.write_picture(run_dir, epoch, name, picture, png)
