"""The driver's half of the data path: the Ray Data streams of a run, planned from the store index.

Each stream reads only its own rows: the validation stream the validation images' row groups (view
0, the same targets every epoch), each training stream one view's row groups of the training
images (``train`` when the store holds one view per image, ``train.view<k>`` for each of
``store.views_per_image`` views; epoch e trains on view e mod K). So every stored byte a pass reads
is a byte it uses (``StreamPlan.read_bytes`` says how many). The primary store's parts are read one
task each, with the annotations of the part's images attached when heads need ground truth;
placeholder rows stand for images the primary store lacks (their teachers run in the workers); a
run without a stored teacher streams plain image rows. One decode stage
(``data.pipeline.TrainSampleDecoder``) per stream turns rows into samples.

With ``data.shuffle`` each training pass reads its parts (or blocks of image rows) in an order of
its own, each part's rows permuted, keyed by (``seed``, epoch, copy) (``data.epoch_order``): the
source asks the run's data position for the epoch rank 0 started when Ray Data plans the pass.
Relaunched, an epoch reads in the same order, and the position's trained rows still drop out
whatever the order. A Tune trial has no data position: its passes read in the index's order, and
only the workers' local shuffle buffers (``training.batch_feed``) change from epoch to epoch.
Validation is never shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import pyarrow as pa
import ray

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import CocoDataset, ImageRecord
from vfmkd_ray.data.epoch_order import order_key
from vfmkd_ray.data.ordered_blocks import PassOrder, read_regrouped
from vfmkd_ray.data.pipeline import ANNOTATIONS_COLUMN, SampleSpec, TrainSampleDecoder
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.views import VIEW_CONTEXT_COLUMN, VIEW_PIPELINE, training_view, view_contexts, view_draws
from vfmkd_ray.store.index_rows import VIEW_COLUMN
from vfmkd_ray.store.parts import read_part_schema
from vfmkd_ray.store.ray_source import STORED_BYTES_COLUMN, read_store_rows
from vfmkd_ray.store.schema import aug_seed_for
from vfmkd_ray.training.data_position import DataPosition
from vfmkd_ray.training.read_plan import plan_reads
from vfmkd_ray.training.teacher_stores import RunStores, TrainingImages

VAL_STREAM = "val"


def train_view(cfg: ExperimentConfig, epoch: int) -> int:
    """The stored view epoch ``epoch`` (0-based) trains on: ``epoch mod views``; for a store of
    augmented views (``store.augment: yolov8``), views 1..K-1 in turn in the mosaic epochs and the
    plain view 0 in the others (``data.views.training_view``)."""
    views = cfg.store.views_per_image
    if cfg.store.augment == VIEW_PIPELINE:
        return training_view(epoch, views, cfg.data.augment.mosaic_at(epoch, cfg.train.epochs))
    return epoch % views


def train_stream(cfg: ExperimentConfig, epoch: int) -> str:
    """The name of the training stream epoch ``epoch`` reads."""
    return "train" if cfg.store.views_per_image == 1 else f"train.view{train_view(cfg, epoch)}"


@dataclass(frozen=True)
class StreamPlan:
    datasets: dict[str, ray.data.Dataset]
    read_bytes: dict[str, int]  # stored bytes one pass over each stream reads (0 without a store)


def build_streams(
    cfg: ExperimentConfig,
    stores: RunStores,
    images: TrainingImages,
    dataset: CocoDataset,
    spec: SampleSpec,
    bad_samples: BadSampleLog | None,
    position=None,
    *,
    decode_cpus: float,
) -> StreamPlan:
    """``position`` (``training.data_position``): the rows an interrupted epoch trained on, which the
    training streams leave out; ``decode_cpus``: what each read/decode task reserves
    (``decode_task_cpus``)."""
    labels = _annotations_json(dataset) if spec.max_objects else None
    split_records = _split(images.records, cfg.data.val_fraction)
    epochs = range(cfg.train.epochs)
    wanted = {train_stream(cfg, e): ("train", train_view(cfg, e)) for e in epochs} | {VAL_STREAM: ("val", 0)}
    # A stream of stored views carries each row's view context (data.views) from the primary store.
    draws = view_draws(cfg, [r.image_id for r in dataset.records]) if stores.primary is not None else None
    uris = {r.image_id: r.image_uri for r in dataset.records} if draws is not None else {}
    datasets, read_bytes = {}, {}
    for name, (split, view) in wanted.items():
        records = split_records[split]
        contexts = None
        if draws is not None and view > 0:
            contexts = view_contexts(draws, [r.image_id for r in records], view, uris, labels or {})
        read = partial(_rows, cfg, stores, records, images, view, labels, contexts, decode_cpus)
        rows, nbytes, sources = read(pass_order(cfg, split, 0, position))
        for copy in range(1, cfg.data.repeat if split == "train" else 1):
            # A fresh plan per copy (Ray Data unions distinct datasets), in an order of its own.
            again, _, more = read(pass_order(cfg, split, copy, position))
            rows, sources = rows.union(again), sources + more
        read_bytes[name] = nbytes * (cfg.data.repeat if split == "train" else 1)
        datasets[name] = decoded = rows.map_batches(
            TrainSampleDecoder(
                stores.primary,
                spec if split == "train" else replace(spec, pipeline=None),  # validation: plain
                bad_samples,
                # Validation reads stored targets only (rows without one still go online): the
                # same targets every epoch, so best-by-validation compares like with like.
                cfg.distill.online_ratio if split == "train" else 0.0,
                others=stores.others,
                max_pixels=cfg.data.max_image_pixels,
                position=position if split == "train" else None,
            ),
            # One part (block) per call: a block per part, not per few rows, for the workers to fetch.
            batch_size=None,
            batch_format="pyarrow",  # the decoder takes the binary feature values without a copy
            num_cpus=decode_cpus,
        )
        run_unreserved(decoded, sources)
    return StreamPlan(datasets, read_bytes)


def decode_task_cpus(cfg: ExperimentConfig, cluster_cpus: float | None) -> float:
    """The CPUs each read/decode task of this run reserves (``data.decode_num_cpus``): under
    ``auto`` a whole CPU where the cluster's ``cluster_cpus`` keep at least one beside the most Train
    workers the run may hold. When those reserve fractions of a CPU, or the cluster is shared
    (``None``: Tune's concurrent trials), no node is sure to keep a whole one, and 0.25 fits."""
    train = cfg.train
    free = 0.0
    if cluster_cpus is not None and float(train.cpus_per_worker).is_integer():
        free = cluster_cpus - train.max_workers * train.cpus_per_worker
    return cfg.data.decode_cpus(free)


def run_unreserved(stream: ray.data.Dataset, sources: int) -> None:
    """Runs a stream read from one source without Ray Data's per-operator resource reservation.
    Such a stream is one fused read-and-decode operator, which the reservation (made to keep the
    operators of a longer pipeline from starving each other) held to one task at a time on the CPUs
    left beside the Train workers: 100 against 160 images/s on 2 CPUs on the plain path, where a
    DataLoader makes 195 (``benchmarks/data_plane``). A union of sources (``data.repeat``, the
    placeholder rows of images without a stored row) keeps it: its reads are operators of their
    own, which the reservation keeps from reading far ahead of the decode. The setting is the
    stream's own copy of the driver's context."""
    if sources == 1:
        stream.context.op_resource_reservation_enabled = False


@dataclass(frozen=True)
class EpochOrder:
    """A training pass's order key: the run's seed, the epoch rank 0 last started (asked of the
    data position where Ray Data plans the pass) and the copy of the split (``data.repeat``)."""

    seed: int
    copy: int
    position: DataPosition

    def __call__(self) -> tuple[int, ...]:
        return order_key(self.seed, self.position.epoch(), self.copy)


def pass_order(
    cfg: ExperimentConfig, split: str, copy: int, position: DataPosition | None
) -> PassOrder | None:
    """How copy ``copy`` of ``split`` orders each pass: by epoch when ``data.shuffle`` holds and the
    run has a data position; None (the index's order) for validation and Tune trials."""
    if split != "train" or not cfg.data.shuffle or position is None:
        return None
    return EpochOrder(cfg.seed, copy, position)


def _split(records: list[ImageRecord], val_fraction: float) -> dict[str, list[ImageRecord]]:
    out: dict[str, list[ImageRecord]] = {"train": [], "val": []}
    for record in records:
        out["val" if is_validation(record.image_id, val_fraction) else "train"].append(record)
    return out


def _rows(
    cfg: ExperimentConfig,
    stores: RunStores,
    records: list[ImageRecord],
    images: TrainingImages,
    view: int,
    labels: dict[str, str] | None,
    contexts: dict[str, str] | None,
    decode_cpus: float,
    order: PassOrder | None,
) -> tuple[ray.data.Dataset, int, int]:
    """One pass over ``records`` at ``view``, ordered by ``order``: their row groups of the primary
    store (plus placeholders for the images it lacks: one block, not ordered), or plain image rows
    when no teacher is stored; the stored bytes it reads, and how many sources it unions.
    ``contexts``: each image's view context (JSON), for a view of augmented canvases."""
    if stores.primary is None:
        items = [
            {
                "image_id": r.image_id,
                "image_uri": r.image_uri,
                VIEW_COLUMN: view,
                "aug_seed": aug_seed_for(r.image_id, cfg.seed, view),
                ANNOTATIONS_COLUMN: (labels or {}).get(r.image_id, ""),
                STORED_BYTES_COLUMN: 0,
            }
            for r in records
        ]
        rows = pa.Table.from_pylist(items)
        return read_regrouped(rows, cfg.store.rows_per_part, decode_cpus, order), 0, 1
    online_only = {r.image_id for r in images.online_only}
    stored_ids = [r.image_id for r in records if r.image_id not in online_only]
    reads = plan_reads(stores.primary_index, stores.primary.uri, stored_ids, view)
    texts = {ANNOTATIONS_COLUMN: labels} if labels is not None else {}
    if contexts is not None:
        texts[VIEW_CONTEXT_COLUMN] = contexts
    part_texts = None
    if texts:
        part_texts = {
            part: {column: {i: by_id[i] for i in ids if i in by_id} for column, by_id in texts.items()}
            for part, ids in reads.image_ids.items()
        }
    placeholders = [r for r in records if r.image_id in online_only]
    parts = [read_store_rows(reads.row_groups, decode_cpus, part_texts, order)] if reads.row_groups else []
    if placeholders:
        schema_part = storage.join(stores.primary.uri, stores.primary_index.column("part")[0].as_py())
        parts.append(ray.data.from_arrow(_placeholder_rows(schema_part, placeholders, cfg.seed, view, texts)))
    if not parts:
        raise ValueError("a stream of the run has no rows to read")
    rows = parts[0] if len(parts) == 1 else parts[0].union(parts[1])
    return rows, reads.nbytes, len(parts)


def _annotations_json(dataset: CocoDataset) -> dict[str, str]:
    return {image_id: annotations.to_json() for image_id, annotations in dataset.annotations.items()}


def _placeholder_rows(
    part: str, records: list[ImageRecord], seed: int, view: int, texts: dict[str, dict[str, str]]
) -> pa.Table:
    """Rows with the store's schema and empty feature columns, one per record (plus their
    ``texts``, annotations and view contexts, and ``stored_bytes`` 0, as the read stage adds
    them)."""
    schema = read_part_schema(part)
    columns = {}
    for field in schema:
        if field.name == "image_id":
            columns[field.name] = [r.image_id for r in records]
        elif field.name == "image_uri":
            columns[field.name] = [r.image_uri for r in records]
        elif field.name == "aug_seed":
            columns[field.name] = [aug_seed_for(r.image_id, seed, view) for r in records]
        elif field.name == VIEW_COLUMN:
            columns[field.name] = [view] * len(records)
        else:
            columns[field.name] = [_empty_value(field.type)] * len(records)
    table = pa.table(columns, schema=schema)
    table = table.append_column(STORED_BYTES_COLUMN, pa.array([0] * len(records), pa.int64()))
    for column, by_id in texts.items():
        table = table.append_column(
            column, pa.array([by_id.get(r.image_id, "") for r in records], pa.string())
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
