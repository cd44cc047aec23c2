"""The stores a training run reads, one per teacher that a term or head uses: checked against the
config, and the images that train.

The first stored teacher's store (the primary store) streams through Ray Data; the other stores are
joined by image id (``store.row_index``). A teacher without a store runs live in the workers, on
every sample, when ``data.missing_features: online`` allows it, and so does a teacher whose
``under_augmentation`` is ``online`` in an augmented run. An image missing from any store
follows ``data.missing_features``: the run stops, the image is skipped and recorded, or its
teachers run in the worker. A run never trains on fewer samples silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.config_checks import used_teachers
from vfmkd_ray.data.bad_samples import BadSample, BadSampleLog
from vfmkd_ray.data.coco import ImageRecord
from vfmkd_ray.data.views import stored_view_count
from vfmkd_ray.models.teachers.build import describe_teacher
from vfmkd_ray.store.index import index_ids, load_index
from vfmkd_ray.store.index_rows import part_file
from vfmkd_ray.store.manifest import (
    Manifest,
    StoreDataset,
    dataset_fingerprint,
    expected_manifest_fields,
    read_manifest,
    teacher_dataset,
)
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.row_index import StoreRowIndex
from vfmkd_ray.store.schema import FIRST_CHECKSUM_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStores:
    primary: StoreDataset | None = None
    others: tuple[StoreRowIndex, ...] = ()
    live: tuple[str, ...] = ()  # aliases of used teachers without a store: they run in the workers
    primary_index: pa.Table | None = None  # the primary store's store.index

    def manifests(self) -> dict[str, Manifest]:
        """Stored teacher alias -> manifest, the primary teacher first."""
        if self.primary is None:
            return {}
        return {self.primary.alias: self.primary.manifest} | {
            index.store.alias: index.store.manifest for index in self.others
        }


@dataclass(frozen=True)
class TrainingImages:
    records: list[ImageRecord]  # every record training sees, both splits
    online_only: list[ImageRecord]  # not in the primary store: placeholder rows, teachers run online
    excluded: frozenset[str]  # in the primary store, but skipped: another teacher's store lacks them

    @property
    def ids(self) -> list[str]:
        return [r.image_id for r in self.records]


def check_stores(cfg: ExperimentConfig, records: list[ImageRecord]) -> RunStores:
    """Every used teacher's store, checked to be made by that teacher, size, codec and layers, from
    this dataset (``records``), and to hold the rows its manifest counts; a teacher without one is
    live under ``missing_features: online`` and an error otherwise."""
    stores, live = [], []
    fingerprint = dataset_fingerprint(records)
    for alias in used_teachers(cfg):
        if runs_online_under_augmentation(cfg, alias):
            live.append(alias)
            continue
        store = check_store(cfg, alias, allow_missing=cfg.data.missing_features == "online")
        if store is None:
            live.append(alias)
            continue
        _check_dataset(cfg, store, fingerprint, len(records))
        if store.manifest.schema_version < FIRST_CHECKSUM_VERSION:  # said here: workers log to a file
            log.warning(
                "store %s has schema version %d, without row checksums: corrupt bytes cannot be found "
                "(NaN/inf still are); precompute into a fresh store.root to get them",
                store.uri,
                store.manifest.schema_version,
            )
        stores.append(store)
    if not stores:
        return RunStores(live=tuple(live))
    indexes = [_checked_index(store) for store in stores]
    others = tuple(
        StoreRowIndex.build(store, index) for store, index in zip(stores[1:], indexes[1:], strict=True)
    )
    return RunStores(stores[0], others, tuple(live), indexes[0])


def runs_online_under_augmentation(cfg: ExperimentConfig, alias: str) -> bool:
    """Teacher ``alias`` runs in the workers on every sample, its store unread: an augmented run
    whose teacher says ``under_augmentation: online``."""
    return cfg.data.augment.pipeline != "none" and cfg.teachers[alias].under_augmentation == "online"


def _checked_index(store: StoreDataset) -> pa.Table:
    """The store's index, checked against its manifest and against the parts a listing finds: parts
    lost or added after precompute (a partial copy, a stray file) change what trains."""
    index = load_index(store.uri, store.manifest.index_sha256)
    indexed = set(index.column("part").to_pylist())
    listed = {part_file(p) for p in list_parts(store.uri)}
    manifest = store.manifest
    if (len(listed), index.num_rows) != (manifest.num_parts, manifest.row_count) or listed != indexed:
        raise FeatureStoreError(
            f"store {store.uri} holds {len(listed)} parts ({len(indexed - listed)} of its indexed parts "
            f"missing, {len(listed - indexed)} not indexed), its manifest says {manifest.row_count} rows "
            f"in {manifest.num_parts} parts: a copy is incomplete or parts were added; run "
            f"`vfmkd verify --store {store.uri} --all`, then `vfmkd precompute`"
        )
    return index


def check_store(cfg: ExperimentConfig, alias: str, allow_missing: bool = False) -> StoreDataset | None:
    teacher = describe_teacher(cfg.teachers[alias])  # an unknown teacher name, before any store
    dataset = teacher_dataset(cfg, alias)
    manifest = read_manifest(dataset)
    if manifest is None:
        if allow_missing:
            return None
        raise FeatureStoreError(
            f"no feature store for teacher {alias!r} at {dataset}: run `vfmkd precompute` with this "
            "config first, or set data.missing_features=online to run the teacher in the workers"
        )
    problems = manifest.describe_mismatch(expected_manifest_fields(cfg, alias, teacher.weights_id))
    if any(layer not in manifest.layers for layer in teacher.selected_layers):
        problems.append(
            f"layers: store has {list(manifest.layers)}, run asks for {list(teacher.selected_layers)}"
        )
    if problems:
        raise FeatureStoreError(f"store {dataset} does not match the config:\n  " + "\n  ".join(problems))
    return StoreDataset(alias, dataset, manifest)


def _check_dataset(cfg: ExperimentConfig, store: StoreDataset, fingerprint: str, num_images: int) -> None:
    """A store made from another dataset would train on images the config does not name."""
    if store.manifest.dataset_fingerprint == fingerprint:
        return
    made_from = f"a dataset of {store.manifest.row_count + store.manifest.num_skipped} images"
    if cfg.data.allow_store_from_other_dataset:
        log.warning(
            "store %s was made from %s, not from %s (%d images): training on the images both hold "
            "(data.allow_store_from_other_dataset)",
            store.uri,
            made_from,
            cfg.data.root,
            num_images,
        )
        return
    raise FeatureStoreError(
        f"store {store.uri} was made from {made_from}, not from data.root {cfg.data.root} ({num_images} "
        f"images; dataset fingerprint {store.manifest.dataset_fingerprint[:12]} vs {fingerprint[:12]}): "
        "precompute this dataset into its own store.root, or set "
        "data.allow_store_from_other_dataset=true to train on the images both hold"
    )


def usable_images(
    cfg: ExperimentConfig, stores: RunStores, records: list[ImageRecord], bad_samples: BadSampleLog
) -> TrainingImages:
    """The images training sees, applying ``data.missing_features`` to those without a row in
    some store (recorded in ``bad_samples`` when skipped)."""
    if stores.primary is None:
        return TrainingImages(list(records), [], frozenset())
    in_primary = set(index_ids(stores.primary_index))
    # An image is stored when a store holds every view of it that it promises (a view a run reads
    # and the store lacks would otherwise leave the image out of that epoch without a word).
    complete = _complete(stores.primary.manifest, stores.primary_index.column("image_id").to_pylist())
    stored = [(stores.primary.uri, complete)] + [
        (index.store.uri, _complete(index.store.manifest, [image_id for image_id, _ in index.locations]))
        for index in stores.others
    ]
    lacking: dict[str, list[str]] = {}  # image id -> the stores without its row
    for record in records:
        if gaps := [uri for uri, ids in stored if record.image_id not in ids]:
            lacking[record.image_id] = gaps
    missing = [r for r in records if r.image_id in lacking]
    policy = cfg.data.missing_features
    if missing and policy == "error":
        stores_named = sorted({uri for gaps in lacking.values() for uri in gaps})
        raise FeatureStoreError(
            f"{len(missing)} images of {cfg.data.root} have no feature row in {', '.join(stores_named)}, "
            f"e.g. {[r.image_uri for r in missing[:3]]}; run `vfmkd precompute`, "
            "or set data.missing_features=skip or online"
        )
    by_id = {r.image_id: r for r in records}
    stored_records = [by_id[i] for i in index_ids(stores.primary_index) if i in by_id and i in complete]
    not_in_dataset = frozenset(in_primary - by_id.keys())  # rows of images the dataset does not list
    if policy == "online":
        online_only = [r for r in missing if r.image_id not in complete]
        partial = frozenset(in_primary - complete)  # their stored views unread: online in every epoch
        return TrainingImages(stored_records + online_only, online_only, not_in_dataset | partial)
    for record in missing:
        reason = f"no row (of some view) in {', '.join(lacking[record.image_id])}"
        bad_samples.record(BadSample(record.image_id, record.image_uri, "missing-features", reason))
    excluded = frozenset(lacking) & in_primary
    kept = [r for r in stored_records if r.image_id not in excluded]
    return TrainingImages(kept, [], excluded | not_in_dataset)


def _complete(manifest: Manifest, row_ids: list[str]) -> set[str]:
    """The images of ``row_ids`` (a store's rows, one id per row) with every view the store
    promises (``data.views.stored_view_count``)."""
    counts = Counter(row_ids)
    views, spec = manifest.views_per_image, manifest.view_spec
    return {i for i, count in counts.items() if count >= stored_view_count(i, views, spec)}
