"""Stored features against the teacher running online: SAM ViT-B at the same input size.

- features: images/s of getting a batch's teacher features onto the device, from the store (read
  the parts, check and decode the rows, ``codecs.to_float32``) or from SAM ViT-B's forward pass
  (``BatchFeed`` with every sample marked online, the worker's own online path);
- training: images/s of the worker's step loop (``BatchFeed.to_batch`` + ``train_step``) with
  stored features, over the same loop with the teacher online.

    .venv/bin/python -m benchmarks.offline_online [--input-size 1024] [--images 8] [--repeats 3] [--gpu]

Precomputing the store runs SAM once per image (through Ray, as ``vfmkd precompute`` does); that
one-off cost is not in either figure.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.figures import Figure, ratio
from benchmarks.workload import batch_feed, bench_config, part_rows, prepare_store, raw_batches
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.pipeline import ONLINE_COLUMN
from vfmkd_ray.models.build import run_teacher_shapes
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.store import codecs
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.reader import decode_features
from vfmkd_ray.store.schema import feature_column
from vfmkd_ray.training.step import train_step
from vfmkd_ray.training.task import build_task
from vfmkd_ray.training.teacher_stores import check_stores

SECTION = "offline vs online teacher"


def stored_feature_rate(cfg: ExperimentConfig, device: torch.device) -> float:
    """Images/s from the store's parts to float32 features on ``device``."""
    store = check_stores(cfg, read_image_records(cfg.data)).primary
    started, images = time.perf_counter(), 0
    for part in list_parts(store.uri):
        rows = part_rows(part)
        stored = decode_features(rows, store.manifest, store.uri)
        for layer in store.manifest.layers:
            tensor = torch.from_numpy(stored[feature_column(layer)]).to(device)
            codecs.to_float32(tensor, store.manifest.codec)
        images += len(rows["image_id"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def loop_rates(cfg: ExperimentConfig, device: torch.device, online: bool) -> tuple[float, float]:
    """One pass of the worker's step loop over the train split; returns (images/s of the whole
    loop, images/s of ``to_batch`` alone: the teacher features' share)."""
    shapes = run_teacher_shapes(cfg)
    batches = raw_batches(cfg)
    task = build_task(cfg, shapes, len(batches), device)
    teachers = {alias: build_teacher(t).to(device) for alias, t in cfg.teachers.items()} if online else {}
    feed = batch_feed(cfg, task.parts, device, teachers)
    task.parts.model.train()
    feeding = 0.0
    images = 0
    started = time.perf_counter()
    for raw in batches:
        if online:
            raw = raw | {ONLINE_COLUMN: torch.ones_like(raw[ONLINE_COLUMN])}
        fed = time.perf_counter()
        batch = feed.to_batch(raw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        feeding += time.perf_counter() - fed
        train_step(task.parts.model, batch, task, cfg.train.grad_clip_norm)
        images += len(batch)
    return images / (time.perf_counter() - started), images / feeding


def measure(cfg: ExperimentConfig, args: argparse.Namespace) -> list[Figure]:
    device = torch.device("cuda" if args.gpu else "cpu")
    size = cfg.teachers[cfg.primary_teacher].input_size
    stored_features = [stored_feature_rate(cfg, device) for _ in range(args.repeats)]
    offline, online = [], []
    for repeat in range(args.repeats):
        print(f"[bench] offline/online loops, repeat {repeat + 1}/{args.repeats}", flush=True)
        offline.append(loop_rates(cfg, device, online=False)[0])
        online.append(loop_rates(cfg, device, online=True))
    online_features = [features for _, features in online]
    online_loop = [loop for loop, _ in online]
    name = f"SAM ViT-B at {size} px"
    return [
        Figure(SECTION, f"{name}: features from the store", "images/s", stored_features, "read + decode"),
        Figure(SECTION, f"{name}: features from the teacher online", "images/s", online_features),
        ratio(SECTION, f"{name}: stored / online features", stored_features, online_features, target=">= 5"),
        Figure(SECTION, f"{name}: training loop, stored features", "images/s", offline),
        Figure(SECTION, f"{name}: training loop, teacher online", "images/s", online_loop),
        ratio(SECTION, f"{name}: training loop, stored / online", offline, online_loop),
    ]


def run(root: str, argv: list[str]) -> list[Figure]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input-size", type=int, default=1024)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args(argv)
    cfg = bench_config(
        root,
        [
            f"data.synthetic.num_images={args.images}",
            f"data.synthetic.image_size={args.input_size}",
            "data.val_fraction=0.01",
            f"teachers.sam.input_size={args.input_size}",
            "store.rows_per_part=4",
            f"store.teacher_batch_size={args.batch_size}",
            f"train.batch_size={args.batch_size}",
        ],
    )
    prepare_store(cfg)
    return measure(cfg, args)


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
