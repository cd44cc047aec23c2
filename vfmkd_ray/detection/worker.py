"""``detection_loop_per_worker``: YOLC detection (and its distillation) inside Ray Train workers.

Per epoch: a bounded number of steps over the worker's shard (supervised loss, plus the KD terms
against the frozen teacher detector when ``distill.enable``), a validation pass, and one
``ray.train.report`` with rank 0's checkpoint; rank 0 also keeps ``best_detector.pth``.
"""

from __future__ import annotations

import sys
import time

import ray.train
import ray.train.torch
import torch

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.pipeline import IMAGE_COLUMN
from vfmkd_ray.detection.checkpoint import BEST_DETECTOR, FrozenDetector, load_detector, save_detector
from vfmkd_ray.detection.dataset import BOXES_COLUMN, LABELS_COLUMN
from vfmkd_ray.detection.lsm import find_clusters
from vfmkd_ray.detection.lsm_visual import save_lsm_overlay
from vfmkd_ray.detection.model import YOLCDetector
from vfmkd_ray.detection.step import DetectionDistiller, detection_step, neck_info
from vfmkd_ray.losses.registry import build_loss_terms
from vfmkd_ray.models.students import build_student
from vfmkd_ray.train.collectives import all_workers_have, mean_across_workers, report_epoch, restore_state
from vfmkd_ray.train.fault_injection import maybe_fail_once
from vfmkd_ray.train.step import optimizer_step


def detection_loop_per_worker(loop_config: dict) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["experiment"])
    run_dir, steps_per_epoch = loop_config["run_dir"], loop_config["steps_per_epoch"]
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)

    detector = YOLCDetector(build_student(cfg.student), cfg.detection)
    teacher, terms = None, {}
    if cfg.distill.enable:
        teacher = FrozenDetector(load_detector(cfg.distill.teacher_ckpt)).to(device)
        teacher_channels = teacher.detector.neck.fuse[0].out_channels
        shapes = {"detector": {"neck": (teacher_channels, 1, 1)}}
        terms = build_loss_terms(cfg.distill, neck_info(cfg.detection), shapes) if cfg.distill.terms else {}
    distiller = DetectionDistiller(detector, terms).to(device)
    optimizer = torch.optim.AdamW(
        distiller.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=cfg.train.epochs * steps_per_epoch
    )
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    resumable = {"distiller": distiller, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    state = restore_state(resumable)
    if rank == 0:
        start = f"start at epoch {state.epoch}/{cfg.train.epochs}"
        _log(f"worker 0 on {device}: {start}, distillation {'on' if cfg.distill.enable else 'off'}")
    model = ray.train.torch.prepare_model(distiller)
    params = [p for p in model.parameters() if p.requires_grad]
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")

    def step(batch, grad: bool):
        images = normalize(batch[IMAGE_COLUMN].to(device))
        with torch.set_grad_enabled(grad):
            return detection_step(
                model if grad else distiller,
                images,
                batch[BOXES_COLUMN].to(device),
                batch[LABELS_COLUMN].to(device),
                cfg.detection,
                cfg.distill,
                teacher,
                terms,
            )

    for epoch in range(state.epoch, cfg.train.epochs):
        maybe_fail_once(epoch, rank)
        started = time.monotonic()
        model.train()
        sums: dict[str, tuple[float, int]] = {}
        batches = iter(train_shard.iter_torch_batches(batch_size=cfg.train.batch_size, drop_last=True))
        for _ in range(steps_per_epoch):
            batch = next(batches, None)
            if not all_workers_have(batch is not None, device):
                break
            out = step(batch, grad=True)
            optimizer_step(out["loss"], optimizer, scaler, params, cfg.train.grad_clip_norm)
            scheduler.step()
            _accumulate(sums, out, 1)
        distiller.eval()
        val_sums: dict[str, tuple[float, int]] = {}
        first_val = None
        for batch in val_shard.iter_torch_batches(batch_size=cfg.train.batch_size):
            first_val = first_val if first_val is not None else batch
            _accumulate(val_sums, step(batch, grad=False), len(batch[IMAGE_COLUMN]))
        record = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.monotonic() - started, 2),
            **{f"train/{k}": v for k, v in mean_across_workers(sums, device).items()},
            **{f"val/{k}": v for k, v in mean_across_workers(val_sums, device).items()},
        }
        state.epoch, state.step = epoch + 1, state.step + steps_per_epoch
        state.history.append(record)
        improved = record["val/loss"] < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, record["val/loss"])
        if rank == 0 and cfg.distill.lsm_visualize and first_val is not None:
            _visualize(distiller, first_val, cfg, run_dir, epoch + 1, device)
        _report(rank, run_dir, state, record, improved, detector, cfg, resumable)


def _accumulate(sums: dict[str, tuple[float, int]], out: dict[str, torch.Tensor], count: int) -> None:
    for key, value in out.items():
        total, seen = sums.get(key, (0.0, 0))
        sums[key] = (total + float(value.detach()) * count, seen + count)


@torch.no_grad()
def _visualize(distiller, batch, cfg: ExperimentConfig, run_dir: str, epoch: int, device) -> None:
    image = batch[IMAGE_COLUMN][:1]
    out = distiller(normalize(image.to(device)))
    probs = torch.sigmoid(out.heatmap_BKHW[0].float())
    crops = find_clusters(
        probs, tuple(image.shape[-2:]), distiller.stride, cfg.detection.lsm,
        cfg.distill.max_patches_per_img, cfg.distill.min_patch_size,
    )  # fmt: skip
    save_lsm_overlay(image[0].numpy(), crops, storage.join(run_dir, "lsm", f"epoch_{epoch:03d}.png"))


def _report(rank, run_dir, state, record, improved, detector, cfg, resumable) -> None:
    if rank == 0:
        if improved:
            save_detector(storage.join(run_dir, BEST_DETECTOR), detector, cfg.student, cfg.detection)
        _log(
            f"epoch {record['epoch']}/{cfg.train.epochs}  train loss {record['train/loss']:.4f}  "
            f"val loss {record['val/loss']:.4f}  ({record['seconds']:.1f}s){'  * best' if improved else ''}"
        )
    report_epoch(rank, run_dir, state, record, resumable)


def _log(message: str) -> None:
    print(f"[vfmkd detect] {message}", file=sys.__stdout__, flush=True)
