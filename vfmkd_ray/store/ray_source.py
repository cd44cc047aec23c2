"""The store as a Ray Data source: one read task per part, through the product's storage layer.

The driver already knows the part URIs and their row groups, so the source is that list
(``data.ordered_blocks``: planning a pass opens no file) rather than ``read_parquet``, which costs
about 2 s of planning per pass here (four 2 MB parts: 1.9-2.7 s per pass, against 0.11-0.14 s for a
list of parts read by a task each), and every epoch is a new pass. The source is planned again at
every pass, so a pass may read the parts in an order of its own (``order``: the training streams
permute them per epoch). Reads go through ``storage``, so S3 settings and errors are the same as
everywhere else. A task reads only the row groups its part names (parts hold one row per row group),
so a split or a view reads the bytes of its own rows and no others; every column of them is read,
the ``feat.L.crc32`` checksums included, so the decode stage (``reader.decode_row``) can check each
row. Each row carries ``stored_bytes``, its share of the bytes read, for the run's accounting of bytes
read against bytes used.

When the heads need ground truth, each part also carries the annotations of the images in that part
(one JSON text: image id -> ``ImageAnnotations`` JSON, put in the object store once, when the
dataset is built), and the read task adds them to the rows as the ``annotations`` column: the labels
reach the decode stage with their rows, with no join and nothing large in the plan of a pass.
"""

from __future__ import annotations

import json
from functools import partial

import pyarrow as pa
import ray

from vfmkd_ray.data.ordered_blocks import PassOrder, SourceBlock, read_blocks
from vfmkd_ray.store.parts import read_row_groups

PART_COLUMN = "part"
ROW_GROUPS_COLUMN = "row_groups"
STORED_BYTES_COLUMN = "stored_bytes"  # a row's share of the compressed bytes its read cost
PART_ANNOTATIONS_COLUMN = "part_annotations"
ANNOTATIONS_COLUMN = "annotations"  # equals data.pipeline.ANNOTATIONS_COLUMN


def read_part(part: str, groups: list[int], labels_json: str | None = None) -> pa.Table:
    """The rows of ``groups`` of ``part`` with ``stored_bytes`` (and ``annotations`` from
    ``labels_json``, image id -> annotation JSON, when given)."""
    table, nbytes = read_row_groups(part, groups)
    table = table.append_column(STORED_BYTES_COLUMN, pa.array(nbytes, pa.int64()))
    if labels_json is not None:
        by_id = json.loads(labels_json)
        column = [by_id.get(str(image_id), "") for image_id in table.column("image_id").to_pylist()]
        table = table.append_column(ANNOTATIONS_COLUMN, pa.array(column, pa.string()))
    return table


def read_parts(batch: pa.Table) -> pa.Table:
    """A table of (part URI, row groups[, annotations JSON]) items -> those rows, in item order: a
    pass's reads in one process (tests and benchmarks)."""
    parts = batch.column(PART_COLUMN).to_pylist()
    groups = batch.column(ROW_GROUPS_COLUMN).to_pylist()
    labels = (
        batch.column(PART_ANNOTATIONS_COLUMN).to_pylist()
        if PART_ANNOTATIONS_COLUMN in batch.column_names
        else [None] * len(parts)
    )
    return pa.concat_tables(
        [read_part(part, wanted, text) for part, wanted, text in zip(parts, groups, labels, strict=True)]
    )


def part_blocks(
    row_groups: dict[str, list[int]], labels: dict[str, ray.ObjectRef] | None = None
) -> list[SourceBlock]:
    """A block per part (in ``row_groups`` order) that reads its row groups; ``labels``: a part's
    annotation JSON in the object store."""
    return [
        SourceBlock(len(groups), partial(_read_part_labelled, part, groups, (labels or {}).get(part)))
        for part, groups in row_groups.items()
    ]


def read_store_rows(
    row_groups: dict[str, list[int]],
    num_cpus: float,
    annotations: dict[str, dict[str, str]] | None = None,
    order: PassOrder | None = None,
) -> ray.data.Dataset:
    """A dataset of the rows in ``row_groups`` (part URI -> its row groups to read; the store's
    Parquet schema plus ``stored_bytes``), one task per part; ``annotations`` maps a part to its
    images' annotation JSON by image id; ``order`` orders each pass (``data.ordered_blocks``)."""
    if not row_groups:
        raise ValueError("the store has no parts to read")
    labels = None
    if annotations is not None:
        labels = {part: ray.put(json.dumps(annotations.get(part, {}))) for part in row_groups}
    return read_blocks(part_blocks(row_groups, labels), num_cpus, order)


def _read_part_labelled(part: str, groups: list[int], labels: ray.ObjectRef | None) -> pa.Table:
    return read_part(part, groups, None if labels is None else ray.get(labels))
