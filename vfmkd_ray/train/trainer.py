"""The training driver: checks the store against the config, builds the Ray Data streams and runs
one Ray Train ``TorchTrainer``. Launching it again with the same ``name`` and ``storage_path``
resumes from the latest checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, dump_config
from vfmkd_ray.data.bad_samples import BAD_SAMPLES_DIR, BAD_SAMPLES_JSONL, BadSampleLog
from vfmkd_ray.data.coco import ImageRecord
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import TrainSampleDecoder, is_validation
from vfmkd_ray.losses.registry import TeacherShapes, build_loss_terms
from vfmkd_ray.models.students import build_student
from vfmkd_ray.ray_errors import find_cause
from vfmkd_ray.ray_session import ensure_ray, require_shared_paths
from vfmkd_ray.storage import StorageError
from vfmkd_ray.store.manifest import layer_shapes
from vfmkd_ray.store.parts import list_parts, read_part_schema
from vfmkd_ray.store.ray_source import read_store_rows
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.schema import aug_seed_for
from vfmkd_ray.train.run_files import (
    BEST_BACKBONE_PTH,
    BEST_BACKBONE_SAFETENSORS,
    RESOLVED_CONFIG,
    read_metrics_log,
)
from vfmkd_ray.train.teacher_stores import RunStores, TrainingImages, check_stores, usable_images
from vfmkd_ray.train.worker import train_loop_per_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What a finished training run reports, feature or detection distillation alike."""

    run_dir: str
    num_train: int
    num_val: int
    num_bad_samples: int
    steps_per_epoch: int
    history: list[dict[str, float]]
    checkpoint: str | None


@dataclass(frozen=True)
class TrainSummary(RunSummary):
    best_backbone: tuple[str, str]


class TrainingError(RuntimeError):
    """Training failed for a reason the product can name (after Ray's retries)."""


def run_training(cfg: ExperimentConfig, callbacks=None) -> TrainSummary:
    """Distills the student from the store; relaunching with the same name resumes."""
    cfg.s3.apply()
    stores = check_stores(cfg)
    check_loss_terms(cfg, layer_shapes(stores.manifests()))
    run_dir = storage.join(storage.absolute(cfg.train.storage_path), cfg.name)
    bad_samples = BadSampleLog(storage.join(run_dir, BAD_SAMPLES_DIR))
    images = usable_images(cfg, stores, bad_samples)
    num_val = sum(is_validation(i, cfg.data.val_fraction) for i in images.ids)
    num_train = len(images.ids) - num_val
    steps_per_epoch = steps_per_epoch_for(cfg, num_train, num_val)
    storage.write_text_atomic(storage.join(run_dir, RESOLVED_CONFIG), dump_config(cfg))
    ensure_ray(local_cpus_needed(cfg))
    require_shared_paths(cfg)
    log.info(
        "train %s: %d train / %d val images, %d steps per epoch", run_dir, num_train, num_val, steps_per_epoch
    )
    skip_log = bad_samples if cfg.data.on_bad_sample == "skip" else None
    datasets = _datasets(cfg, stores, images, skip_log)
    plan = {
        "run_dir": run_dir,
        "steps_per_epoch": steps_per_epoch,
        "manifests": {alias: m.model_dump() for alias, m in stores.manifests().items()},
    }
    trainer = torch_trainer(cfg, train_loop_per_worker, {"plan": plan}, datasets, callbacks)
    result = fit(trainer, run_dir, (BadImageError, FeatureStoreError, StorageError))
    num_bad = bad_samples.write_jsonl(storage.join(run_dir, BAD_SAMPLES_JSONL))
    if num_bad:
        log.warning("%d samples were skipped; see %s", num_bad, storage.join(run_dir, BAD_SAMPLES_JSONL))
    return TrainSummary(
        run_dir=run_dir,
        num_train=num_train,
        num_val=num_val,
        num_bad_samples=num_bad,
        steps_per_epoch=steps_per_epoch,
        history=read_metrics_log(run_dir),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        best_backbone=(
            storage.join(run_dir, BEST_BACKBONE_SAFETENSORS),
            storage.join(run_dir, BEST_BACKBONE_PTH),
        ),
    )


def check_loss_terms(cfg: ExperimentConfig, teacher_shapes: TeacherShapes) -> None:
    """Builds the loss terms against the student's levels and the teachers' layers on the meta
    device, so a term naming a missing layer or stride fails before any Ray work."""
    with torch.device("meta"):
        student = build_student(cfg.student.model_copy(update={"weights": None}))
    try:
        build_loss_terms(cfg.distill, student.feature_info, teacher_shapes)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def steps_per_epoch_for(cfg: ExperimentConfig, num_train: int, num_val: int) -> int:
    per_step = cfg.train.batch_size * cfg.train.num_workers
    if num_train < per_step:
        raise ValueError(
            f"the train split has {num_train} images, fewer than train.batch_size x train.num_workers "
            f"= {per_step}: lower the batch size or the worker count"
        )
    if num_val == 0:
        raise ValueError(f"the validation split is empty: raise data.val_fraction ({cfg.data.val_fraction})")
    return num_train // per_step


def torch_trainer(cfg: ExperimentConfig, loop, loop_config: dict, datasets, callbacks=None) -> TorchTrainer:
    """The ``TorchTrainer`` of a run: scaling, failure and checkpoint settings from ``cfg.train``;
    ``name`` + ``storage_path`` make a relaunch resume. ``callbacks`` (Tune's report callback)
    see every reported epoch."""
    return TorchTrainer(
        loop,
        train_loop_config={"experiment": cfg.model_dump(mode="json"), **loop_config},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=storage.absolute(cfg.train.storage_path),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.num_checkpoints_to_keep),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )


def fit(trainer: TorchTrainer, run_dir: str, named_errors: tuple[type[Exception], ...]) -> ray.train.Result:
    """Runs ``trainer``; an error the product can name comes back as itself, not as Ray's wrapper."""
    try:
        return trainer.fit()
    except Exception as err:
        cause = find_cause(err, named_errors)
        if cause is not None:
            raise type(cause)(str(cause)) from None
        raise TrainingError(f"training run {run_dir} failed: {err}") from err


def local_cpus_needed(cfg: ExperimentConfig) -> float:
    """Logical CPUs a local Ray needs: the Train workers plus room for the read/decode tasks."""
    return cfg.train.num_workers * cfg.train.cpus_per_worker + 2


def _datasets(
    cfg: ExperimentConfig, stores: RunStores, images: TrainingImages, bad_samples: BadSampleLog | None
) -> dict[str, ray.data.Dataset]:
    """Train/val streams over the primary store's rows, plus placeholder rows (features computed
    online) for images the primary store lacks."""
    parts = list_parts(stores.primary.uri)
    rows = read_store_rows(parts, cfg.data.decode_num_cpus)
    if images.online_only:
        rows = rows.union(ray.data.from_arrow(_placeholder_rows(parts[0], images.online_only, cfg.seed)))
    return {
        split: rows.map_batches(
            TrainSampleDecoder(
                stores.primary,
                split,
                cfg.data.val_fraction,
                bad_samples,
                cfg.distill.online_ratio,
                others=stores.others,
                excluded=images.excluded,
            ),
            # One part per call: a block per part, not per few rows, for the workers to fetch.
            batch_size=None,
            num_cpus=cfg.data.decode_num_cpus,
        )
        for split in ("train", "val")
    }


def _placeholder_rows(part: str, records: list[ImageRecord], seed: int) -> pa.Table:
    """Rows with the store's schema and empty feature columns, one per record."""
    schema = read_part_schema(part)
    columns = {}
    for field in schema:
        if field.name == "image_id":
            columns[field.name] = [r.image_id for r in records]
        elif field.name == "image_uri":
            columns[field.name] = [r.image_uri for r in records]
        elif field.name == "aug_seed":
            columns[field.name] = [aug_seed_for(r.image_id, seed) for r in records]
        else:
            columns[field.name] = [_empty_value(field.type)] * len(records)
    return pa.table(columns, schema=schema)


def _empty_value(arrow_type: pa.DataType) -> object:
    if pa.types.is_binary(arrow_type):
        return b""
    if pa.types.is_string(arrow_type):
        return ""
    if pa.types.is_list(arrow_type):
        return []
    if pa.types.is_integer(arrow_type):
        return 0
    raise TypeError(f"no placeholder for store column type {arrow_type}")
