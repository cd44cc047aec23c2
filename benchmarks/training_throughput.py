"""Training throughput: the Ray path against the plain-loop limit, worker scaling, worker memory.

- step overhead: steady images/s of the Ray Train worker loop fed by Ray Data from the store
  (``throughput/train_images_per_s`` of each epoch after the first, see ``training.step_clock``),
  over the images/s of a plain loop in this process that runs the same ``train_step`` on the same
  model with the same batches already decoded in memory, on as many torch threads as one worker
  (with ``--augment``, the YOLOv8 recipe's augmentation: the Ray path augments every epoch, the
  plain loop replays one epoch's augmented samples);
- scaling: the Ray path with the most ``--workers`` over the Ray path with one;
- memory: the peak resident memory of a worker (largest over workers) per ``--batch-sizes``.

    .venv/bin/python benchmarks/training_throughput.py [--images 192] [--epochs 3] [--repeats 2]
        [--workers 1 2] [--batch-size 4] [--batch-sizes 2 4 8] [--cpus-per-worker 1] [--rows-per-part 64]
        [--gpu] [--augment] [--set KEY=VALUE ...]

On a GPU node pass ``--gpu`` (one GPU per worker); the first epoch of every run is warm-up and is
not counted.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.figures import Figure, ratio
from benchmarks.workload import batch_feed, bench_config, prepare_store, raw_batches
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.models.build import run_teacher_shapes
from vfmkd_ray.ray_session import ensure_ray
from vfmkd_ray.training.augmented_targets import augmentation
from vfmkd_ray.training.step import train_step
from vfmkd_ray.training.step_clock import StepClock
from vfmkd_ray.training.task import build_task
from vfmkd_ray.training.trainer import check_model, local_cpus_needed, run_training

SECTION = "training"
# --augment: mosaic in every epoch, as in all but the recipe's last 10 (a run of a few epochs
# would otherwise be all close-mosaic, and the plain loop's replayed epoch 0 too).
AUGMENTED = [
    "data.augment.pipeline=yolov8",
    "data.augment.close_mosaic_epochs=0",
    "teachers.sam.under_augmentation=warp",
]


def ray_history(cfg: ExperimentConfig, workers: int, batch_size: int, repeat: int) -> list[dict]:
    """The epoch records of one fresh run (a new name, so it resumes nothing)."""
    name = f"bench-w{workers}-b{batch_size}-{repeat}"
    train = cfg.train.model_copy(update={"num_workers": workers, "batch_size": batch_size})
    print(f"[bench] Ray run {name}", flush=True)
    return run_training(cfg.model_copy(update={"name": name, "train": train})).history


def steady_rates(histories: list[list[dict]]) -> list[float]:
    return [record["throughput/train_images_per_s"] for history in histories for record in history[1:]]


def plain_loop_rates(cfg: ExperimentConfig, device: torch.device) -> list[float]:
    """Steady images/s of ``train_step`` over in-memory batches, one value per epoch after the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))  # what Ray gives one worker
    try:
        shapes = run_teacher_shapes(cfg)
        # With data.augment, one epoch's augmented samples, replayed: the step's cost as the run's.
        raw = raw_batches(cfg, pipeline=augmentation(cfg, max_objects=0))
        task = build_task(cfg, shapes, cfg.train.epochs * len(raw), device)
        feed = batch_feed(cfg, task.parts, device)
        batches = [feed.to_batch(batch) for batch in raw]
        rates = []
        for _ in range(cfg.train.epochs):
            task.parts.model.train()
            clock = StepClock()
            for batch in batches:
                clock.batch_arrived()
                train_step(task.parts.model, batch, task, cfg.train.grad_clip_norm)
                clock.step_done(len(batch))
            rates.append(clock.images_per_s)
        return rates[1:]
    finally:
        torch.set_num_threads(threads)


def measure(cfg: ExperimentConfig, args: argparse.Namespace) -> list[Figure]:
    device = torch.device("cuda" if args.gpu else "cpu")
    batch = cfg.train.batch_size
    one, most = min(args.workers), max(args.workers)
    plain: list[float] = []
    runs: dict[int, list[list[dict]]] = {n: [] for n in sorted(set(args.workers))}
    for repeat in range(args.repeats):
        # The limit is measured next to each repeat of the Ray runs, so a slow spell of the machine
        # lands on both sides of the ratio.
        print(f"[bench] plain loop {repeat}", flush=True)
        plain += plain_loop_rates(cfg, device)
        for workers, histories in runs.items():
            histories.append(ray_history(cfg, workers, batch, repeat))
    single = steady_rates(runs[one])
    figures = [
        Figure(SECTION, f"plain loop, batch {batch}", "images/s", plain, "same model and batches, in memory"),
        Figure(
            SECTION, f"Ray path, {one} worker, batch {batch}", "images/s", single, "steady, from the store"
        ),
        Figure(
            SECTION,
            f"Ray path, {one} worker: wait for the first batch, first epoch",
            "s",
            [h[0]["seconds/first_batch"] for h in runs[one]],
            "pipeline and actor start-up",
        ),
        Figure(
            SECTION,
            f"Ray path, {one} worker: wait for the first batch, later epochs",
            "s",
            [r["seconds/first_batch"] for h in runs[one] for r in h[1:]],
        ),
        ratio(SECTION, "step overhead: Ray path / plain loop", single, plain, target=">= 0.9"),
    ]
    if most != one:
        scaled = steady_rates(runs[most])
        figures += [
            Figure(SECTION, f"Ray path, {most} workers, batch {batch} each", "images/s", scaled),
            ratio(SECTION, f"scaling: {most} workers / {one}", scaled, single),
        ]
    memory_runs = {batch: runs[one]}
    for size in sorted(set(args.batch_sizes) - {batch}):
        memory_runs[size] = [ray_history(cfg, one, size, repeat) for repeat in range(args.repeats)]
    for size, histories in sorted(memory_runs.items()):
        peaks = [history[-1]["memory/peak_rss_mb"] for history in histories]
        figures.append(Figure(SECTION, f"peak worker memory, batch {size}", "MiB", peaks, "resident (RSS)"))
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=192, help="synthetic images (256 px)")
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=2, help="Ray runs per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=4, help="per worker")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8], help="for the memory figure")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument(
        "--rows-per-part",
        type=int,
        default=64,
        help="store part size (docs/performance.md: 64 or more; the demo's is 16)",
    )
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker; the plain loop on cuda:0")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="the YOLOv8 recipe's augmentation (data.augment.pipeline yolov8, the SAM maps warped): "
        "the Ray path augments every epoch, the plain loop replays one epoch's samples from memory",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides on top, e.g. student.size=s",
    )


def config_for(root: str, args: argparse.Namespace) -> ExperimentConfig:
    return bench_config(
        root,
        [
            f"data.synthetic.num_images={args.images}",
            "data.val_fraction=0.0625",
            f"store.rows_per_part={args.rows_per_part}",
            f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.cpus_per_worker={args.cpus_per_worker}",
            f"train.use_gpu={str(args.gpu).lower()}",
            *(AUGMENTED if args.augment else []),
            *args.set,
        ],
    )


def refuse_boxes_under_augmentation(cfg: ExperimentConfig) -> None:
    """The plain loop replays augmented samples without annotations: under ``data.augment`` only
    heads and terms that need no boxes compare like with like. Checked before any store is built."""
    if cfg.data.augment.pipeline == "none":
        return
    needs = check_model(cfg, run_teacher_shapes(cfg)).needs
    if needs.max_objects:
        raise ValueError(
            f"data.augment.pipeline {cfg.data.augment.pipeline} (--augment): the plain loop's replayed "
            f"samples carry no boxes, but heads {list(cfg.heads)} or the KD terms need up to "
            f"{needs.max_objects} a sample; drop --augment, or those heads"
        )


def run(root: str, argv: list[str]) -> list[Figure]:
    """Parses ``argv`` (the flags above), builds the store under ``root`` and measures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    cfg = config_for(root, args)
    refuse_boxes_under_augmentation(cfg)
    # One local Ray for the store and every run, sized for the most workers: Ray Data does not
    # schedule its decode tasks on a local Ray started for fewer.
    most = cfg.train.model_copy(update={"num_workers": max(args.workers)})
    ensure_ray(local_cpus_needed(cfg.model_copy(update={"train": most})))
    prepare_store(cfg)
    return measure(cfg, args)


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
