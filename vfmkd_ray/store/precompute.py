"""The precompute job: run each teacher once over a dataset and fill its feature store.

Per teacher, Ray Data reads image records, fetches and letterboxes the images in tasks, runs the
teacher in an actor pool (one GPU per actor when the cluster has GPUs) and writes Parquet parts
atomically. Images whose rows already exist are skipped, so an interrupted run resumes without
duplicates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import ray
import torch

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import IMAGE_COLUMN, ImageLoader
from vfmkd_ray.locations import check_locations
from vfmkd_ray.models.teachers import TeacherConfig, build_teacher, describe_teacher
from vfmkd_ray.progress import progress_bar
from vfmkd_ray.ray_errors import find_cause
from vfmkd_ray.ray_session import ensure_ray, require_shared_paths
from vfmkd_ray.store.manifest import (
    BAD_SAMPLES_DIR,
    LayerSpec,
    Manifest,
    dataset_fingerprint,
    dataset_uri,
    read_manifest,
    write_manifest,
)
from vfmkd_ray.store.parts import PartWriter, duplicate_ids, list_parts, stored_image_ids
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.schema import SCHEMA_VERSION, aug_seed_for, feature_column

log = logging.getLogger(__name__)
SKIP_COUNT_EVERY_S = 5.0  # the progress bar's count of skipped images lists the bad-sample folder


@dataclass(frozen=True)
class PrecomputeSummary:
    teacher: str  # the alias in the config
    dataset: str
    num_images: int
    num_new: int
    row_count: int
    num_parts: int
    num_skipped: int
    bytes: int
    seconds: float


class TeacherActor:
    """Ray Data actor: builds the frozen teacher once, then maps image batches to features."""

    def __init__(self, teacher_cfg: dict):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.teacher = build_teacher(TeacherConfig.model_validate(teacher_cfg)).to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = normalize(torch.from_numpy(batch.pop(IMAGE_COLUMN)).to(self.device))
        features = self.teacher(images)
        return {
            **batch,
            **{feature_column(name): f.float().cpu().numpy() for name, f in features.items()},
        }


def teacher_dataset(cfg: ExperimentConfig, alias: str) -> str:
    """``<store.root>/<teacher name>/<input_size>``: where the store of teacher ``alias`` lives."""
    teacher = cfg.teachers[alias]
    return dataset_uri(cfg.store.root, teacher.name, teacher.input_size)


def expected_manifest_fields(cfg: ExperimentConfig, alias: str, weights_id: str) -> dict:
    teacher = cfg.teachers[alias]
    return {
        "teacher": teacher.name,
        "teacher_weights": weights_id,
        "input_size": teacher.input_size,
        "codec": cfg.store.codec,
        "augment": cfg.store.augment,
    }


def run_precompute(cfg: ExperimentConfig, aliases: list[str] | None = None) -> list[PrecomputeSummary]:
    """Fills the store of each teacher in ``aliases`` (default: every configured teacher)."""
    for alias in aliases or []:
        if alias not in cfg.teachers:
            raise ValueError(f"no teacher {alias!r} in the config; teachers: {list(cfg.teachers)}")
    cfg.s3.apply()
    check_locations(cfg, reads=("data.root",), writes=("store.root",))
    for alias in aliases or cfg.teachers:  # fail fast on bad names/weights, before any Ray work
        describe_teacher(cfg.teachers[alias])
    return [precompute_teacher(cfg, alias) for alias in aliases or cfg.teachers]


def precompute_teacher(cfg: ExperimentConfig, alias: str) -> PrecomputeSummary:
    """Fills ``<store.root>/<teacher>/<input_size>/`` for every image of ``cfg.data``."""
    started = time.monotonic()
    teacher_cfg = cfg.teachers[alias]
    teacher = describe_teacher(teacher_cfg)
    records = read_image_records(cfg.data)
    dataset = teacher_dataset(cfg, alias)
    expected = expected_manifest_fields(cfg, alias, teacher.weights_id)
    existing = read_manifest(dataset)
    if existing is not None and existing.schema_version != SCHEMA_VERSION:
        # Resuming would mix rows without checksums into a store whose manifest promises them.
        raise FeatureStoreError(
            f"store {dataset} has schema version {existing.schema_version}; this precompute writes "
            f"version {SCHEMA_VERSION} (row checksums): precompute into a fresh store.root, or delete it"
        )
    if existing is not None and (problems := existing.describe_mismatch(expected)):
        raise FeatureStoreError(f"store {dataset} was made differently:\n  " + "\n  ".join(problems))
    if existing is not None and list(existing.layers) != list(teacher.selected_layers):
        raise FeatureStoreError(
            f"store {dataset} holds layers {list(existing.layers)}, teachers.{alias}.layers selects "
            f"{list(teacher.selected_layers)}: select the same layers or use another store.root"
        )
    if removed := storage.remove_temporaries(dataset):
        log.info("removed %d unfinished part files of an interrupted run", removed)
    bad_samples = _fresh_bad_sample_log(dataset) if cfg.data.on_bad_sample == "skip" else None
    done = set(stored_image_ids(dataset))
    todo = [r for r in records if r.image_id not in done]
    log.info(
        "precompute %s (%s): %d images, %d stored, %d to do",
        alias,
        dataset,
        len(records),
        len(done),
        len(todo),
    )
    if todo:
        ensure_ray()
        require_shared_paths(cfg)
        _run_pipeline(cfg, teacher_cfg, dataset, todo, list(teacher.selected_layers), bad_samples)
    skipped = [s.image_id for s in bad_samples.read_all()] if bad_samples else []
    if skipped:
        log.warning("precompute skipped %d unreadable images, listed in %s", len(skipped), bad_samples.folder)
    ids, parts = finalize_store(dataset, records, teacher, expected, skipped)
    return PrecomputeSummary(
        teacher=alias,
        dataset=dataset,
        num_images=len(records),
        num_new=len(todo),
        row_count=len(ids),
        num_parts=len(parts),
        num_skipped=len(skipped),
        bytes=_total_bytes(parts),
        seconds=time.monotonic() - started,
    )


def finalize_store(
    dataset: str, records: list, teacher, expected: dict, skipped: list[str] = ()
) -> tuple[list[str], list[str]]:
    """Checks every record not ``skipped`` has exactly one row, then writes the manifest.

    Returns:
        The stored image ids and the part URIs.
    """
    ids = stored_image_ids(dataset)
    if dupes := duplicate_ids(ids):
        raise FeatureStoreError(f"store {dataset} holds duplicate image ids: {dupes[:10]}")
    missing = {r.image_id for r in records} - set(ids) - set(skipped)
    if missing:
        raise FeatureStoreError(f"store {dataset} lacks {len(missing)} images, e.g. {sorted(missing)[:5]}")
    parts = list_parts(dataset)
    strides = teacher.layer_strides()
    layers = {
        name: LayerSpec(shape=shape, stride=strides[name]) for name, shape in teacher.feature_shapes().items()
    }
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        layers=layers,
        row_count=len(ids),
        num_parts=len(parts),
        num_skipped=len(skipped),
        dataset_fingerprint=dataset_fingerprint(records),
        **expected,
    )
    write_manifest(dataset, manifest)
    return ids, parts


def _fresh_bad_sample_log(dataset: str) -> BadSampleLog:
    """This run's record of skipped images (an earlier run's list may be stale: files get fixed)."""
    log_ = BadSampleLog(storage.join(dataset, BAD_SAMPLES_DIR))
    for uri in storage.list_files(log_.folder, "*.json"):
        fs, path = storage.filesystem(uri)
        fs.rm(path)
    return log_


def _run_pipeline(
    cfg: ExperimentConfig,
    teacher_cfg: TeacherConfig,
    dataset: str,
    todo: list,
    layers: list[str],
    bad_samples: BadSampleLog | None,
) -> None:
    items = [asdict(r) | {"aug_seed": aug_seed_for(r.image_id, cfg.seed)} for r in todo]
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // cfg.store.rows_per_part))
    ds = ds.map_batches(
        ImageLoader(teacher_cfg.input_size, cfg.store.augment, bad_samples, cfg.data.max_image_pixels),
        batch_size=cfg.store.teacher_batch_size,
        compute=ray.data.TaskPoolStrategy(size=cfg.store.read_tasks),
        num_cpus=cfg.data.decode_num_cpus,
    )
    ds = ds.map_batches(
        TeacherActor,
        fn_constructor_kwargs={"teacher_cfg": teacher_cfg.model_dump()},
        batch_size=cfg.store.teacher_batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.store.num_teacher_actors),
        num_gpus=1 if use_gpu else 0,
    )
    writer = PartWriter(dataset, layers, cfg.store.codec)
    ds = ds.map_batches(writer, batch_size=cfg.store.rows_per_part, num_cpus=cfg.data.decode_num_cpus)
    started, parts, rows, skipped, counted = time.monotonic(), 0, 0, 0, 0.0
    try:
        with progress_bar(f"precompute {teacher_cfg.name}", len(todo), show_rate=True) as bar:
            for part in ds.iter_rows():  # one row per part written, as each part lands
                parts, rows = parts + 1, rows + int(part["rows"])
                now = time.monotonic()
                if bad_samples is not None and now - counted > SKIP_COUNT_EVERY_S:  # a listing each
                    skipped, counted = bad_samples.count(), now
                bar.update(rows + skipped, f"{skipped} skipped")
    except Exception as err:
        cause = find_cause(err, (BadImageError, FeatureStoreError, FileNotFoundError))
        if cause is not None:
            raise type(cause)(str(cause)) from None
        raise
    log.info("precompute wrote %d parts, %d rows in %.0fs", parts, rows, time.monotonic() - started)


def _total_bytes(parts: list[str]) -> int:
    total = 0
    for part in parts:
        fs, path = storage.filesystem(part)
        total += fs.size(path)
    return total
