"""The embedded default: synthetic data -> SAM ViT-B features -> YOLOv8-n distilled on 2 workers."""

from __future__ import annotations

import time

from vfmkd_ray import run_files, storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.locations import check_locations
from vfmkd_ray.ray_session import ensure_ray
from vfmkd_ray.store.manifest import read_manifest, teacher_dataset
from vfmkd_ray.store.precompute import PrecomputeSummary, run_precompute
from vfmkd_ray.store.schema import SCHEMA_VERSION
from vfmkd_ray.training.trainer import RunSummary, local_cpus_needed, run_training

COSINE_PREFIX = "val/cos/"  # one per feature term: cosine to its teacher on the val split


def run_demo(cfg: ExperimentConfig) -> bool:
    """Runs the whole pipeline and prints its summary; True when the similarity rose."""
    started = time.monotonic()
    cfg.s3.apply()
    check_locations(cfg, writes=("data.root", "store.root", "train.storage_path"))
    cfg = cfg.model_copy(update={"name": f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"})
    say(f"1/3 synthetic dataset -> {cfg.data.root}")
    num_images = write_synthetic_coco(cfg.data)
    ensure_ray(local_cpus_needed(cfg))  # one local Ray for both jobs, sized for training
    teachers = ", ".join(f"{t.name} ({t.weights} weights, {t.input_size} px)" for t in cfg.teachers.values())
    say(f"2/3 precompute {teachers}")
    _rebuild_outdated_stores(cfg)
    stores = run_precompute(cfg)
    say(f"3/3 distill {cfg.student.label} with {cfg.train.num_workers} Ray Train workers")
    train = run_training(cfg)
    rose = print_summary(num_images, stores, train, time.monotonic() - started)
    return rose


def _rebuild_outdated_stores(cfg: ExperimentConfig) -> None:
    """The demo's stores are its own outputs: one written by an older version of the store schema
    (which precompute refuses to extend) is rebuilt rather than stopping the embedded default."""
    for alias in cfg.teachers:
        dataset = teacher_dataset(cfg, alias)
        manifest = read_manifest(dataset)
        if manifest is not None and manifest.schema_version != SCHEMA_VERSION:
            say(
                f"rebuilding {dataset}: its store schema is {manifest.schema_version}, "
                f"this version writes {SCHEMA_VERSION}"
            )
            storage.remove_tree(dataset)


def print_summary(
    num_images: int, stores: list[PrecomputeSummary], train: RunSummary, seconds: float
) -> bool:
    """Prints the run's summary; True when every teacher-cosine metric rose."""
    first, last = train.history[0], train.history[-1]
    cosine_keys = [key for key in last if key.startswith(COSINE_PREFIX)]
    rose = bool(cosine_keys) and all(last[key] > first.get(key, 0.0) for key in cosine_keys)
    lines = [
        "",
        "=== vfmkd demo summary ===",
        f"images            {num_images} ({train.num_train} train / {train.num_val} val)",
    ]
    for store in stores:
        lines += [
            f"store {store.teacher:<11} {store.row_count} rows, {store.num_parts} parts, "
            f"{store.bytes / 1e6:.2f} MB ({store.num_new} computed this run, {store.seconds:.1f}s)",
            f"                  {store.dataset}",
        ]
    lines += [
        f"bad samples       {train.num_bad_samples} skipped "
        f"({sum(s.num_skipped for s in stores)} at precompute), {train.num_dropped_boxes} degenerate boxes "
        "dropped",
        f"steps             {last['step']} ({train.steps_per_epoch} per epoch x {last['epoch']} epochs)",
        f"val loss          epoch {first['epoch']}: {first['val/loss']:.4f}  ->  "
        f"epoch {last['epoch']}: {last['val/loss']:.4f}",
    ]
    for key in cosine_keys:
        start, end = first.get(key, float("nan")), last[key]
        lines.append(
            f"cosine {key.removeprefix(COSINE_PREFIX):<10} epoch {first['epoch']}: {start:.4f}  ->  "
            f"epoch {last['epoch']}: {end:.4f}  ({'rose' if end > start else 'DID NOT RISE'})"
        )
    lines += [
        f"run directory     {train.run_dir}",
        f"curves            {run_files.path(train.run_dir, run_files.CURVES_PNG)}",
        f"last checkpoint   {train.checkpoint}",
        *(
            [f"best backbone     {train.best_backbone[0]}", f"                  {train.best_backbone[1]}"]
            if train.best_backbone
            else ["best backbone     none written (no epoch improved the validation loss)"]
        ),
        f"wall time         {seconds:.0f}s",
    ]
    print("\n".join(lines), flush=True)
    return rose


def say(message: str) -> None:
    print(f"[vfmkd demo] {message}", flush=True)
