"""The stores a training run reads, one per teacher: checked against the config, and the images
that train.

The primary teacher's store streams through Ray Data; the other teachers' stores are joined by
image id (``store.row_index``). An image missing from any store follows ``data.missing_features``:
the run stops, the image is skipped and recorded, or its teachers run in the worker. A run never
trains on fewer samples silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.bad_samples import BadSample, BadSampleLog
from vfmkd_ray.data.coco import ImageRecord, read_image_records
from vfmkd_ray.models.teachers import describe_teacher
from vfmkd_ray.store.manifest import Manifest, StoreDataset, read_manifest
from vfmkd_ray.store.parts import stored_image_ids
from vfmkd_ray.store.precompute import expected_manifest_fields, teacher_dataset
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.row_index import StoreRowIndex


@dataclass(frozen=True)
class RunStores:
    primary: StoreDataset
    others: tuple[StoreRowIndex, ...] = ()

    def manifests(self) -> dict[str, Manifest]:
        """Teacher alias -> manifest, the primary teacher first."""
        return {self.primary.alias: self.primary.manifest} | {
            index.store.alias: index.store.manifest for index in self.others
        }


@dataclass(frozen=True)
class TrainingImages:
    ids: list[str]  # every image id training sees, both splits
    online_only: list[ImageRecord]  # not in the primary store: placeholder rows, teachers run online
    excluded: frozenset[str]  # in the primary store, but skipped: another teacher's store lacks them


def check_stores(cfg: ExperimentConfig) -> RunStores:
    """Every teacher's store, checked to be made by that teacher, size, codec and layers."""
    stores = [check_store(cfg, alias) for alias in cfg.teachers]
    return RunStores(stores[0], tuple(StoreRowIndex.build(store) for store in stores[1:]))


def check_store(cfg: ExperimentConfig, alias: str) -> StoreDataset:
    dataset = teacher_dataset(cfg, alias)
    manifest = read_manifest(dataset)
    if manifest is None:
        raise FeatureStoreError(
            f"no feature store for teacher {alias!r} at {dataset}: "
            "run `vfmkd precompute` with this config first"
        )
    teacher = describe_teacher(cfg.teachers[alias])
    problems = manifest.describe_mismatch(expected_manifest_fields(cfg, alias, teacher.weights_id))
    if any(layer not in manifest.layers for layer in teacher.selected_layers):
        problems.append(
            f"layers: store has {list(manifest.layers)}, run asks for {list(teacher.selected_layers)}"
        )
    if problems:
        raise FeatureStoreError(f"store {dataset} does not match the config:\n  " + "\n  ".join(problems))
    return StoreDataset(alias, dataset, manifest)


def usable_images(cfg: ExperimentConfig, stores: RunStores, bad_samples: BadSampleLog) -> TrainingImages:
    """The images training sees, applying ``data.missing_features`` to those without a row in
    some store (recorded in ``bad_samples`` when skipped)."""
    primary_ids = stored_image_ids(stores.primary.uri)
    stored = [(stores.primary.uri, set(primary_ids))] + [
        (index.store.uri, index.locations.keys()) for index in stores.others
    ]
    lacking: dict[str, list[str]] = {}  # image id -> the stores without its row
    records = read_image_records(cfg.data)
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
    in_primary = set(primary_ids)
    if policy == "online":
        online_only = [r for r in missing if r.image_id not in in_primary]
        return TrainingImages(primary_ids + [r.image_id for r in online_only], online_only, frozenset())
    for record in missing:
        reason = f"no row in {', '.join(lacking[record.image_id])}"
        bad_samples.record(BadSample(record.image_id, record.image_uri, "missing-features", reason))
    excluded = frozenset(lacking) & in_primary
    return TrainingImages([i for i in primary_ids if i not in excluded], [], excluded)
