"""The precompute job: run each teacher once over a dataset and fill its feature store.

Per teacher, Ray Data reads image records, fetches and letterboxes the images in tasks, runs the
teacher in an actor pool (one GPU per actor when the cluster has GPUs) and writes Parquet parts
atomically. Images whose rows already exist are skipped, so an interrupted run resumes without
duplicates.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from vfmkd_ray import run_lease, storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import ImageRecord, read_image_records
from vfmkd_ray.data.image_loader import ImageLoader
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.samples import IMAGE_COLUMN
from vfmkd_ray.data.views import VIEW_RECORD_COLUMN, VIEW_SOURCES_COLUMN, ViewDraws, view_draws
from vfmkd_ray.locations import check_locations
from vfmkd_ray.models.teachers.build import build_teacher, describe_teacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.progress import progress_bar
from vfmkd_ray.ray_errors import find_cause
from vfmkd_ray.ray_session import ensure_ray, require_shared_paths
from vfmkd_ray.store import codecs
from vfmkd_ray.store.channel_stats import merged
from vfmkd_ray.store.index import build_index, read_index, write_index
from vfmkd_ray.store.index_rows import VIEW_COLUMN, row_keys
from vfmkd_ray.store.manifest import (
    BAD_SAMPLES_DIR,
    LayerSpec,
    Manifest,
    dataset_fingerprint,
    expected_manifest_fields,
    read_manifest,
    teacher_dataset,
    write_manifest,
)
from vfmkd_ray.store.parts import INDEX_ROWS_COLUMN, PartWriter, duplicate_ids, part_channel_stats
from vfmkd_ray.store.phi_s import sample_covariance, write_phi_s
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


def run_precompute(cfg: ExperimentConfig, aliases: list[str] | None = None) -> list[PrecomputeSummary]:
    """Fills the store of each teacher in ``aliases`` (default: every configured teacher)."""
    for alias in aliases or []:
        if alias not in cfg.teachers:
            raise ValueError(f"no teacher {alias!r} in the config; teachers: {list(cfg.teachers)}")
    cfg.s3.apply()
    check_locations(cfg, reads=("data.root",), writes=("store.root",))
    for alias in aliases or cfg.teachers:  # fail fast on bad names/weights, before any Ray work
        describe_teacher(cfg.teachers[alias])
    records = read_image_records(cfg.data)  # parsed once for every teacher
    return [precompute_teacher(cfg, alias, records) for alias in aliases or cfg.teachers]


def precompute_teacher(cfg: ExperimentConfig, alias: str, records: list[ImageRecord]) -> PrecomputeSummary:
    """Fills ``<store.root>/<teacher>/<input_size>/`` with ``store.views_per_image`` rows per image
    of ``records``, resuming from the rows its index (or, for parts not indexed yet, a scan) holds.
    One precompute per store at a time: the driver holds the store's lease (``run_lease``)."""
    with run_lease.RunLease(teacher_dataset(cfg, alias), "vfmkd precompute"):
        return _fill_store(cfg, alias, records)


def _fill_store(cfg: ExperimentConfig, alias: str, records: list[ImageRecord]) -> PrecomputeSummary:
    started = time.monotonic()
    teacher_cfg = cfg.teachers[alias]
    teacher = describe_teacher(teacher_cfg)
    dataset = teacher_dataset(cfg, alias)
    expected = expected_manifest_fields(cfg, alias, teacher.weights_id)
    existing = read_manifest(dataset)
    if existing is not None and (problems := existing.describe_mismatch(expected)):
        raise FeatureStoreError(f"store {dataset} was made differently:\n  " + "\n  ".join(problems))
    fingerprint = dataset_fingerprint(records)
    if existing is not None and existing.view_spec and existing.dataset_fingerprint != fingerprint:
        raise FeatureStoreError(
            f"store {dataset} holds augmented views whose mosaic partners were drawn from another "
            "dataset (its fingerprint differs: images were added, removed or moved); new views would "
            "be drawn from other partners: precompute into a fresh store.root"
        )
    if existing is not None and list(existing.layers) != list(teacher.selected_layers):
        raise FeatureStoreError(
            f"store {dataset} holds layers {list(existing.layers)}, teachers.{alias}.layers selects "
            f"{list(teacher.selected_layers)}: select the same layers or use another store.root"
        )
    if removed := storage.remove_temporaries(dataset):
        log.info("removed %d unfinished part files of an interrupted run", removed)
    views = cfg.store.views_per_image
    index = build_index(dataset, read_index(dataset, existing.index_sha256) if existing else None)
    draws = view_draws(cfg, [r.image_id for r in records])
    todo = rows_to_do(records, index, views, cfg.seed, draws)
    schema_version = SCHEMA_VERSION
    if existing is not None and existing.schema_version != SCHEMA_VERSION:
        if todo.num_rows or views != existing.views_per_image:
            # Resuming would mix parts of two layouts (checksums, views) in one store.
            raise FeatureStoreError(
                f"store {dataset} has schema version {existing.schema_version}; this precompute writes "
                f"version {SCHEMA_VERSION} (row checksums, views): precompute into a fresh store.root, "
                "or delete it"
            )
        schema_version = existing.schema_version  # complete: only its index is (re)written
    bad_samples = _fresh_bad_sample_log(dataset) if cfg.data.on_bad_sample == "skip" else None
    row_bytes = _row_bytes(teacher, cfg.store.codec)
    total_rows = len(records) * views if draws is None else len(records) + (views - 1) * len(draws.training)
    log.info(
        "precompute %s (%s): %d images x %d view%s, %d rows stored, %d to do (%s per row, %s for the "
        "whole store before compression)",
        alias,
        dataset,
        len(records),
        views,
        "s" if views > 1 else "",
        index.num_rows,
        todo.num_rows,
        _bytes_text(row_bytes),
        _bytes_text(row_bytes * total_rows),
    )
    if draws is not None:
        log.info(
            "precompute %s: views 1-%d of each of the %d training images are mosaic canvases of the "
            "yolov8-%s recipe: %d rows (%s) more than a plain store, as much more teacher time, and "
            "each view decodes the images on its canvas (up to 4, 8 with MixUp)",
            alias,
            views - 1,
            len(draws.training),
            draws.recipe,
            (views - 1) * len(draws.training),
            _bytes_text(row_bytes * (views - 1) * len(draws.training)),
        )
    new_rows = []
    if todo.num_rows:
        ensure_ray()
        require_shared_paths(cfg)
        new_rows = _run_pipeline(
            cfg, teacher_cfg, dataset, todo, list(teacher.selected_layers), bad_samples, draws
        )
    skipped = [s.image_id for s in bad_samples.read_all()] if bad_samples else []
    if skipped:
        log.warning("precompute skipped %d unreadable images, listed in %s", len(skipped), bad_samples.folder)
    known = pa.concat_tables([index, *new_rows]) if new_rows else index
    index = finalize_store(dataset, records, teacher, expected, skipped, known, schema_version=schema_version)
    return PrecomputeSummary(
        teacher=alias,
        dataset=dataset,
        num_images=len(records),
        num_new=todo.num_rows,
        row_count=index.num_rows,
        num_parts=len(pc.unique(index.column("part"))),
        num_skipped=len(skipped),
        bytes=int(pc.sum(index.column("nbytes")).as_py() or 0),
        seconds=time.monotonic() - started,
    )


def rows_to_do(
    records: list[ImageRecord], index: pa.Table, views: int, seed: int, draws: ViewDraws | None = None
) -> pa.Table:
    """The (image, view) rows ``index`` lacks, as the items the pipeline reads; ids stay in Arrow
    (the records are the driver's one Python copy of them). With ``draws`` (``store.augment:
    yolov8``) the augmented views are of the training images only, and each row also carries its
    view's record and the URIs of the images on its canvas."""
    ids = pa.array([r.image_id for r in records], pa.string())
    uris = {r.image_id: r.image_uri for r in records} if draws is not None else {}
    done = row_keys(index)
    tables = []
    for view in range(views):
        keys = pc.binary_join_element_wise(ids, pa.scalar(str(view)), ":")
        todo = pc.invert(pc.is_in(keys, value_set=done)).to_numpy(zero_copy_only=False).nonzero()[0]
        picked = [records[i] for i in todo]
        if draws is not None and view > 0:
            picked = [r for r in picked if r.image_id in draws.training]
        columns = {
            "image_id": pa.array([r.image_id for r in picked], pa.string()),
            "image_uri": pa.array([r.image_uri for r in picked], pa.string()),
            "width": pa.array([r.width for r in picked], pa.int64()),
            "height": pa.array([r.height for r in picked], pa.int64()),
            VIEW_COLUMN: pa.array([view] * len(picked), pa.int16()),
            "aug_seed": pa.array([aug_seed_for(r.image_id, seed, view) for r in picked], pa.int64()),
        }
        if draws is not None:
            drawn = [draws.record(r.image_id, view) for r in picked]
            columns[VIEW_RECORD_COLUMN] = pa.array([d.to_json() if d else "" for d in drawn], pa.string())
            sources = [json.dumps({i: uris[i] for i in d.image_ids()}) if d else "" for d in drawn]
            columns[VIEW_SOURCES_COLUMN] = pa.array(sources, pa.string())
        tables.append(pa.table(columns))
    return pa.concat_tables(tables)


def finalize_store(
    dataset: str,
    records: list,
    teacher,
    expected: dict,
    skipped: list[str] = (),
    known: pa.Table | None = None,
    schema_version: int = SCHEMA_VERSION,
) -> pa.Table:
    """Indexes the parts ``known`` does not cover, checks every record not ``skipped`` has exactly
    one row per view, then writes the index and the manifest that names it.

    Returns:
        The store's index.
    """
    index = build_index(dataset, known)
    keys = row_keys(index)
    if len(pc.unique(keys)) != len(keys):
        dupes = duplicate_ids(keys.to_pylist())
        raise FeatureStoreError(f"store {dataset} holds duplicate (image id:view) rows: {dupes[:10]}")
    skipped_ids = set(skipped)
    views = expected["views_per_image"]
    spec = expected.get("view_spec")
    draws = ViewDraws.of_spec(spec, [r.image_id for r in records]) if spec else None
    missing = rows_to_do([r for r in records if r.image_id not in skipped_ids], index, views, 0, draws)
    if missing.num_rows:
        examples = sorted(set(missing.column("image_id").to_pylist()))[:5]
        raise FeatureStoreError(f"store {dataset} lacks {missing.num_rows} rows, e.g. of images {examples}")
    strides = teacher.layer_strides()
    layers = {
        name: LayerSpec(shape=shape, stride=strides[name]) for name, shape in teacher.feature_shapes().items()
    }
    parts = sorted(set(index.column("part").to_pylist()))
    # Footers only, read in parallel: on object storage each is one small request.
    with ThreadPoolExecutor(max_workers=16) as pool:
        footers = list(pool.map(part_channel_stats, [storage.join(dataset, part) for part in parts]))
    stats = merged(footers, list(layers))
    transforms, sampled, cells = sample_covariance(
        dataset, index, list(layers), expected["codec"], expected["input_size"]
    )
    manifest = Manifest(
        schema_version=schema_version,
        layers=layers,
        channel_stats=stats,
        phi_s=write_phi_s(dataset, transforms, sampled, cells),
        row_count=index.num_rows,
        num_parts=len(pc.unique(index.column("part"))),
        num_skipped=len(skipped),
        dataset_fingerprint=dataset_fingerprint(records),
        index_sha256=write_index(dataset, index),  # written first: a manifest never names a missing index
        **expected,
    )
    write_manifest(dataset, manifest)
    return index


def _bytes_text(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _row_bytes(teacher, codec: str) -> int:
    """Stored bytes of one row's features before compression: what a view costs."""
    per_value = np.dtype(codecs.stored_dtype(codec)).itemsize
    return sum(int(np.prod(shape)) * per_value for shape in teacher.feature_shapes().values())


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
    todo: pa.Table,
    layers: list[str],
    bad_samples: BadSampleLog | None,
    draws: ViewDraws | None = None,
) -> list[pa.Table]:
    """Runs the pipeline over ``todo``; returns the index rows of the parts it wrote."""
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    decode_cpus = cfg.data.decode_cpus(free_cpus=0.0)  # the teacher actors hold the CPUs
    min_actors, max_actors = cfg.store.teacher_actor_bounds()
    step = cfg.store.rows_per_part
    ds = ray.data.from_arrow([todo.slice(start, step) for start in range(0, todo.num_rows, step)])
    ds = ds.map_batches(
        ImageLoader(
            teacher_cfg.input_size,
            cfg.store.augment,
            bad_samples,
            cfg.data.max_image_pixels,
            view_spec=draws.spec if draws is not None else None,
        ),
        batch_size=cfg.store.teacher_batch_size,
        compute=ray.data.TaskPoolStrategy(size=cfg.store.read_tasks),
        num_cpus=decode_cpus,
    )
    ds = ds.map_batches(
        TeacherActor,
        fn_constructor_kwargs={"teacher_cfg": teacher_cfg.model_dump()},
        batch_size=cfg.store.teacher_batch_size,
        # Autoscales between the bounds: one GPU per actor on GPU nodes.
        compute=ray.data.ActorPoolStrategy(min_size=min_actors, max_size=max_actors),
        num_gpus=1 if use_gpu else 0,
    )
    writer = PartWriter(dataset, layers, cfg.store.codec, teacher_cfg.input_size)
    new_rows = []
    ds = ds.map_batches(writer, batch_size=cfg.store.rows_per_part, num_cpus=decode_cpus)
    started, parts, rows, skipped, counted = time.monotonic(), 0, 0, 0, 0.0
    try:
        unit = "images" if cfg.store.views_per_image == 1 else "rows"
        with progress_bar(f"precompute {teacher_cfg.name}", todo.num_rows, unit, show_rate=True) as bar:
            for part in ds.iter_rows():  # one row per part written, as each part lands
                parts, rows = parts + 1, rows + int(part["rows"])
                new_rows.append(pa.ipc.open_stream(part[INDEX_ROWS_COLUMN]).read_all())
                now = time.monotonic()
                if bad_samples is not None and now - counted > SKIP_COUNT_EVERY_S:  # a listing each
                    skipped, counted = bad_samples.count(), now
                bar.update(rows + skipped, f"{skipped} skipped")
    except Exception as err:
        # A full disk or an endpoint down while writing a part: the part's URI and the cause.
        cause = find_cause(err, (BadImageError, FeatureStoreError, FileNotFoundError, storage.StorageError))
        if cause is not None:
            raise type(cause)(str(cause)) from None
        raise
    seconds = time.monotonic() - started
    log.info(
        "precompute wrote %d parts, %d rows in %.0fs (%.1f rows/s)", parts, rows, seconds, rows / seconds
    )
    return new_rows
