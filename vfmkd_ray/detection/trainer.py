"""The detection training driver (``task: detection``): COCO records -> Ray Data decode stage ->
one Ray Train ``TorchTrainer``. Relaunching with the same ``name`` and ``storage_path`` resumes."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import ray
import ray.train

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, dump_config
from vfmkd_ray.data.bad_samples import BAD_SAMPLES_DIR, BAD_SAMPLES_JSONL, BadSampleLog
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import is_validation
from vfmkd_ray.detection.checkpoint import BEST_DETECTOR, load_detector
from vfmkd_ray.detection.dataset import DetectionSampleDecoder, read_detection_records
from vfmkd_ray.detection.worker import detection_loop_per_worker
from vfmkd_ray.ray_session import ensure_ray, require_shared_paths
from vfmkd_ray.storage import StorageError
from vfmkd_ray.train.run_files import RESOLVED_CONFIG, read_metrics_log
from vfmkd_ray.train.trainer import RunSummary, fit, local_cpus_needed, steps_per_epoch_for, torch_trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionSummary(RunSummary):
    best_detector: str


def run_detection_training(cfg: ExperimentConfig, callbacks=None) -> DetectionSummary:
    cfg.s3.apply()
    if cfg.distill.enable:
        if not cfg.distill.teacher_ckpt:
            raise ConfigError("distill.enable is true but distill.teacher_ckpt is not set")
        # Workers do not share the driver's working directory: they get an absolute path.
        teacher_ckpt = storage.absolute(cfg.distill.teacher_ckpt)
        cfg = cfg.model_copy(
            update={"distill": cfg.distill.model_copy(update={"teacher_ckpt": teacher_ckpt})}
        )
        load_detector(teacher_ckpt)  # fails fast, naming the file, before any Ray work
    records, _ = read_detection_records(cfg.data, cfg.detection.num_classes)
    num_val = sum(is_validation(r.image_id, cfg.data.val_fraction) for r in records)
    num_train = len(records) - num_val
    steps_per_epoch = steps_per_epoch_for(cfg, num_train, num_val)
    run_dir = storage.join(storage.absolute(cfg.train.storage_path), cfg.name)
    storage.write_text_atomic(storage.join(run_dir, RESOLVED_CONFIG), dump_config(cfg))
    bad_samples = BadSampleLog(storage.join(run_dir, BAD_SAMPLES_DIR))
    skip_log = bad_samples if cfg.data.on_bad_sample == "skip" else None
    ensure_ray(local_cpus_needed(cfg))
    require_shared_paths(cfg)
    log.info(
        "detection %s: %d train / %d val images, %d steps per epoch",
        run_dir,
        num_train,
        num_val,
        steps_per_epoch,
    )
    # Boxes travel flat (x1 y1 x2 y2 ...): Arrow turns nested lists into arrays of arrays.
    items = ray.data.from_items([asdict(r) | {"boxes": [v for box in r.boxes for v in box]} for r in records])
    datasets = {
        split: items.map_batches(
            DetectionSampleDecoder(
                cfg.detection.input_size, cfg.detection.max_objects, split, cfg.data.val_fraction, skip_log
            ),
            batch_size=cfg.train.batch_size,
            num_cpus=cfg.data.decode_num_cpus,
        )
        for split in ("train", "val")
    }
    loop_config = {"run_dir": run_dir, "steps_per_epoch": steps_per_epoch}
    trainer = torch_trainer(cfg, detection_loop_per_worker, loop_config, datasets, callbacks)
    result = fit(trainer, run_dir, (BadImageError, StorageError, FileNotFoundError))
    num_bad = bad_samples.write_jsonl(storage.join(run_dir, BAD_SAMPLES_JSONL))
    return DetectionSummary(
        run_dir=run_dir,
        num_train=num_train,
        num_val=num_val,
        num_bad_samples=num_bad,
        steps_per_epoch=steps_per_epoch,
        history=read_metrics_log(run_dir),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        best_detector=storage.join(run_dir, BEST_DETECTOR),
    )
