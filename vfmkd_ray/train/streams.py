"""The driver's half of the data path: the train and validation Ray Data streams of a run.

Rows come from the primary store's parts (one read task each, with the annotations of the part's
images attached when heads need ground truth), plus placeholder rows for images the primary store
lacks (their teachers run in the workers); a run without a stored teacher streams plain image rows.
One decode stage (``data.pipeline.TrainSampleDecoder``) per split turns rows into samples.
"""

from __future__ import annotations

import math

import pyarrow as pa
import ray

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import CocoDataset, ImageRecord
from vfmkd_ray.data.pipeline import ANNOTATIONS_COLUMN, SampleSpec, TrainSampleDecoder
from vfmkd_ray.store.parts import read_part_schema
from vfmkd_ray.store.ray_source import read_store_rows
from vfmkd_ray.store.schema import aug_seed_for
from vfmkd_ray.train.teacher_stores import RunStores, TrainingImages


def build_streams(
    cfg: ExperimentConfig,
    stores: RunStores,
    images: TrainingImages,
    dataset: CocoDataset,
    spec: SampleSpec,
    bad_samples: BadSampleLog | None,
) -> dict[str, ray.data.Dataset]:
    labels = _annotations_json(dataset) if spec.max_objects else None
    sources = {"train": _rows(cfg, stores, images, labels), "val": _rows(cfg, stores, images, labels)}
    for _ in range(cfg.data.repeat - 1):  # a fresh plan per copy: Ray Data unions distinct datasets
        sources["train"] = sources["train"].union(_rows(cfg, stores, images, labels))
    return {
        split: rows.map_batches(
            TrainSampleDecoder(
                stores.primary,
                split,
                cfg.data.val_fraction,
                spec,
                bad_samples,
                # Validation reads stored targets only (rows without one still go online): the
                # same targets every epoch, so best-by-validation compares like with like.
                cfg.distill.online_ratio if split == "train" else 0.0,
                others=stores.others,
                excluded=images.excluded,
                max_pixels=cfg.data.max_image_pixels,
            ),
            # One part (block) per call: a block per part, not per few rows, for the workers to fetch.
            batch_size=None,
            num_cpus=cfg.data.decode_num_cpus,
        )
        for split, rows in sources.items()
    }


def _rows(
    cfg: ExperimentConfig, stores: RunStores, images: TrainingImages, labels: dict[str, str] | None
) -> ray.data.Dataset:
    """One pass over the run's rows: the primary store's parts (plus placeholders for the images it
    lacks), or plain image rows when no teacher is stored."""
    if stores.primary is not None:
        by_part = None
        if labels is not None:
            by_part = {
                part: {i: labels[i] for i in ids if i in labels} for part, ids in stores.primary_parts.items()
            }
        rows = read_store_rows(list(stores.primary_parts), cfg.data.decode_num_cpus, by_part)
        if images.online_only:
            first_part = next(iter(stores.primary_parts))
            placeholders = _placeholder_rows(first_part, images.online_only, cfg.seed, labels)
            rows = rows.union(ray.data.from_arrow(placeholders))
    else:
        items = [
            {
                "image_id": r.image_id,
                "image_uri": r.image_uri,
                "aug_seed": aug_seed_for(r.image_id, cfg.seed),
                ANNOTATIONS_COLUMN: (labels or {}).get(r.image_id, ""),
            }
            for r in images.records
        ]
        blocks = max(1, math.ceil(len(items) / cfg.store.rows_per_part))
        rows = ray.data.from_items(items, override_num_blocks=blocks)
    return rows


def _annotations_json(dataset: CocoDataset) -> dict[str, str]:
    return {image_id: annotations.to_json() for image_id, annotations in dataset.annotations.items()}


def _placeholder_rows(
    part: str, records: list[ImageRecord], seed: int, labels: dict[str, str] | None
) -> pa.Table:
    """Rows with the store's schema and empty feature columns, one per record (plus their
    annotations, as the read stage adds them)."""
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
    table = pa.table(columns, schema=schema)
    if labels is not None:
        table = table.append_column(
            ANNOTATIONS_COLUMN, pa.array([labels.get(r.image_id, "") for r in records])
        )
    return table


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
