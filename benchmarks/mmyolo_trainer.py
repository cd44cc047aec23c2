"""MMYOLO's own trainer on a COCO set: the peer of ``recipe_parity.py``.

Loads the config MMYOLO packages (``yolov8_n_syncbn_fast_8xb16-500e_coco.py``) and changes only
what a user must change to train it on another dataset and machine: data paths, classes, image
scale (in every pipeline that names it), epochs, close-mosaic length, the warm-up floor, the
validation and checkpoint interval (scaled like the epochs), loader workers (no pinned memory: no
GPU), the seed, a log line every 10 iterations and the epoch clock below. Everything else (the
model, the SGD/EMA/warm-up recipe, the augmentation) is MMYOLO's. Runs its ``Runner`` and writes:

    .venv/bin/python -m benchmarks.mmyolo_trainer --data ROOT --work-dir DIR --img-scale 192
        --epochs 30 --close-mosaic 5 --val-interval 10 --warmup-min-iters 0 [--workers 2]

``ROOT`` holds ``train.json``, ``val.json`` and ``images/``. The JSON (``DIR/result.json``) has each
training epoch's images and seconds (the first batch's arrival to the last step's end, the later
batches' loading included, as vfmkd's ``StepClock``),
the whole wall time, and the last validation's detections file (COCO results, original pixels).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

PACKAGED_CONFIG = "yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py"
MMYOLO_SIZE = 640  # the packaged config's img_scale, replaced everywhere it occurs


def packaged_config_path() -> Path:
    import mmyolo

    return Path(mmyolo.__file__).parent / ".mim" / "configs" / PACKAGED_CONFIG


def adapted_config(args: argparse.Namespace) -> Any:
    """The packaged config with only the dataset/machine settings changed (module docstring)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(packaged_config_path()))
    classes = tuple(c["name"] for c in json.loads((args.data / "train.json").read_text())["categories"])
    size = args.img_scale
    _replace_scale(cfg.train_dataloader.dataset.pipeline, size)
    _replace_scale(cfg.val_dataloader.dataset.pipeline, size)
    switch = next(h for h in cfg.custom_hooks if h.type == "mmdet.PipelineSwitchHook")
    _replace_scale(switch.switch_pipeline, size)
    switch.switch_epoch = args.epochs - args.close_mosaic
    leftover = [p for p in (cfg.train_dataloader, cfg.val_dataloader, switch) if str(MMYOLO_SIZE) in str(p)]
    if leftover:
        raise RuntimeError(f"the packaged config still names {MMYOLO_SIZE} px after adapting: {leftover}")

    cfg.model.bbox_head.head_module.num_classes = len(classes)
    cfg.model.train_cfg.assigner.num_classes = len(classes)
    for loader, ann, shuffle in (
        (cfg.train_dataloader, "train.json", True),
        (cfg.val_dataloader, "val.json", False),
    ):
        loader.dataset.data_root = str(args.data)
        loader.dataset.ann_file = ann
        loader.dataset.data_prefix = {"img": "images/"}
        loader.dataset.metainfo = {"classes": classes}
        loader.num_workers = args.workers
        loader.persistent_workers = args.workers > 0
        loader.pin_memory = False
        assert loader.sampler.shuffle == shuffle
    cfg.train_dataloader.batch_size = args.batch_size
    cfg.optim_wrapper.optimizer.batch_size_per_gpu = args.batch_size
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = str(args.data / "val.json")
    cfg.val_evaluator.outfile_prefix = str(args.work_dir / "val_detections")
    cfg.test_evaluator = cfg.val_evaluator

    cfg.train_cfg.max_epochs = args.epochs
    cfg.train_cfg.val_interval = args.val_interval
    cfg.train_cfg.dynamic_intervals = [(args.epochs - args.close_mosaic, 1)]
    cfg.default_hooks.param_scheduler.max_epochs = args.epochs
    cfg.default_hooks.param_scheduler.warmup_mim_iter = args.warmup_min_iters
    cfg.default_hooks.checkpoint.interval = args.val_interval
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 10}
    cfg.custom_hooks.append({"type": "TrainEpochClock", "priority": "VERY_LOW"})
    cfg.work_dir = str(args.work_dir)
    cfg.randomness = {"seed": args.seed}
    cfg.launcher = "none"
    cfg.env_cfg.cudnn_benchmark = False
    return cfg


def _replace_scale(pipeline: list, size: int) -> None:
    """Every image scale of a pipeline (Mosaic's, the resizes', the affine border) at ``size``."""
    for step in pipeline:
        for key in ("img_scale", "scale"):
            if key in step and tuple(step[key]) == (MMYOLO_SIZE, MMYOLO_SIZE):
                step[key] = (size, size)
        if "border" in step and tuple(step["border"]) == (-MMYOLO_SIZE // 2, -MMYOLO_SIZE // 2):
            step["border"] = (-size // 2, -size // 2)
        if "pre_transform" in step:
            _replace_scale(step["pre_transform"], size)


def register_epoch_clock() -> None:
    """A hook that times each training epoch as vfmkd's ``StepClock`` does: from the first batch's
    arrival (``before_train_iter`` runs once it is loaded) to the end of the last step."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    @HOOKS.register_module(force=True)
    class TrainEpochClock(Hook):
        def __init__(self) -> None:
            self.epochs: list[dict] = []

        def before_train_epoch(self, runner) -> None:
            self._first, self._last, self._images = None, None, 0

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            if self._first is None:
                self._first = time.monotonic()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self._images += len(data_batch["inputs"])
            self._last = time.monotonic()

        def after_train_epoch(self, runner) -> None:
            self.epochs.append({"images": self._images, "seconds": self._last - self._first})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--img-scale", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--close-mosaic", type=int, required=True)
    parser.add_argument("--val-interval", type=int, required=True)
    parser.add_argument("--warmup-min-iters", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.data, args.work_dir = args.data.resolve(), args.work_dir.resolve()

    from vfmkd_ray.openmmlab import mm_registry

    mm_registry("the MMYOLO peer of the recipe parity benchmark")
    register_epoch_clock()
    from mmengine.runner import Runner

    started = time.monotonic()
    runner = Runner.from_cfg(adapted_config(args))
    runner.train()
    wall = time.monotonic() - started
    clock = next(h for h in runner.hooks if type(h).__name__ == "TrainEpochClock")
    result = {
        "epochs": clock.epochs,
        "wall_s": wall,
        "detections": str(args.work_dir / "val_detections.bbox.json"),
    }
    (args.work_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(f"[mmyolo] trained {args.epochs} epochs in {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
