"""The embedded default: synthetic data -> SAM ViT-B features -> YOLOv8-n distilled on 2 workers."""

from __future__ import annotations

import time

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.ray_session import ensure_ray
from vfmkd_ray.store.precompute import PrecomputeSummary, run_precompute
from vfmkd_ray.train.trainer import TrainSummary, local_cpus_needed, run_training

COSINE_KEY = "val/cos/feature_mse"


def run_demo(cfg: ExperimentConfig) -> bool:
    """Runs the whole pipeline and prints its summary; True when the similarity rose."""
    started = time.monotonic()
    cfg.s3.apply()
    cfg = cfg.model_copy(update={"name": f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"})
    say(f"1/3 synthetic dataset -> {cfg.data.root}")
    num_images = write_synthetic_coco(cfg.data)
    ensure_ray(local_cpus_needed(cfg))  # one local Ray for both jobs, sized for training
    say(f"2/3 precompute {cfg.teacher.name} ({cfg.teacher.weights} weights, {cfg.teacher.input_size} px)")
    store = run_precompute(cfg)
    say(f"3/3 distill {cfg.student.name}-{cfg.student.size} with {cfg.train.num_workers} Ray Train workers")
    train = run_training(cfg)
    rose = print_summary(num_images, store, train, time.monotonic() - started)
    return rose


def print_summary(num_images: int, store: PrecomputeSummary, train: TrainSummary, seconds: float) -> bool:
    first, last = train.history[0], train.history[-1]
    rose = last.get(COSINE_KEY, 0.0) > first.get(COSINE_KEY, 0.0)
    lines = [
        "",
        "=== vfmkd demo summary ===",
        f"images            {num_images} ({train.num_train} train / {train.num_val} val)",
        f"store             {store.row_count} rows, {store.num_parts} parts, {store.bytes / 1e6:.2f} MB "
        f"({store.num_new} computed this run, {store.seconds:.1f}s)",
        f"bad samples       {train.num_bad_samples} skipped ({store.num_skipped} at precompute)",
        f"steps             {last['step']} ({train.steps_per_epoch} per epoch x {last['epoch']} epochs)",
        f"val loss          epoch {first['epoch']}: {first['val/loss']:.4f}  ->  "
        f"epoch {last['epoch']}: {last['val/loss']:.4f}",
        f"teacher cosine    epoch {first['epoch']}: {first.get(COSINE_KEY, float('nan')):.4f}  ->  "
        f"epoch {last['epoch']}: {last.get(COSINE_KEY, float('nan')):.4f}  "
        f"({'rose' if rose else 'DID NOT RISE'})",
        f"feature store     {store.dataset}",
        f"run directory     {train.run_dir}",
        f"last checkpoint   {train.checkpoint}",
        f"best backbone     {train.best_backbone[0]}",
        f"                  {train.best_backbone[1]}",
        f"wall time         {seconds:.0f}s",
    ]
    print("\n".join(lines), flush=True)
    return rose


def say(message: str) -> None:
    print(f"[vfmkd demo] {message}", flush=True)
