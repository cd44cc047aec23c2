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
(and, in a stream of stored views, each row's view context, ``data.views``): one JSON text per part
(column -> image id -> text, put in the object store once, when the dataset is built), which the read
task adds to the rows as string columns (``annotations``, ``view_context``): they reach the decode
stage with their rows, with no join and nothing large in the plan of a pass.
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
PART_TEXTS_COLUMN = "part_texts"
ANNOTATIONS_COLUMN = "annotations"  # equals data.pipeline.ANNOTATIONS_COLUMN

# Per part: string column -> image id -> that row's text (annotation JSON, a view's context).
RowTexts = dict[str, dict[str, str]]


def read_part(part: str, groups: list[int], texts_json: str | None = None) -> pa.Table:
    """The rows of ``groups`` of ``part`` with ``stored_bytes`` and, from ``texts_json`` (a
    ``RowTexts`` as JSON) when given, a string column per text ("" for an image without one)."""
    table, nbytes = read_row_groups(part, groups)
    table = table.append_column(STORED_BYTES_COLUMN, pa.array(nbytes, pa.int64()))
    if texts_json is not None:
        ids = [str(image_id) for image_id in table.column("image_id").to_pylist()]
        for column, by_id in json.loads(texts_json).items():
            table = table.append_column(column, pa.array([by_id.get(i, "") for i in ids], pa.string()))
    return table


def read_parts(batch: pa.Table) -> pa.Table:
    """A table of (part URI, row groups[, row texts JSON]) items -> those rows, in item order: a
    pass's reads in one process (tests and benchmarks)."""
    parts = batch.column(PART_COLUMN).to_pylist()
    groups = batch.column(ROW_GROUPS_COLUMN).to_pylist()
    texts = (
        batch.column(PART_TEXTS_COLUMN).to_pylist()
        if PART_TEXTS_COLUMN in batch.column_names
        else [None] * len(parts)
    )
    return pa.concat_tables(
        [read_part(part, wanted, text) for part, wanted, text in zip(parts, groups, texts, strict=True)]
    )


def part_blocks(
    row_groups: dict[str, list[int]], texts: dict[str, ray.ObjectRef] | None = None
) -> list[SourceBlock]:
    """A block per part (in ``row_groups`` order) that reads its row groups; ``texts``: a part's
    ``RowTexts`` JSON in the object store."""
    return [
        SourceBlock(len(groups), partial(_read_part_texts, part, groups, (texts or {}).get(part)))
        for part, groups in row_groups.items()
    ]


def read_store_rows(
    row_groups: dict[str, list[int]],
    num_cpus: float,
    texts: dict[str, RowTexts] | None = None,
    order: PassOrder | None = None,
) -> ray.data.Dataset:
    """A dataset of the rows in ``row_groups`` (part URI -> its row groups to read; the store's
    Parquet schema plus ``stored_bytes``), one task per part; ``texts`` maps a part to the string
    columns its rows get (``RowTexts``); ``order`` orders each pass (``data.ordered_blocks``)."""
    if not row_groups:
        raise ValueError("the store has no parts to read")
    refs = None
    if texts is not None:
        refs = {part: ray.put(json.dumps(texts.get(part, {}))) for part in row_groups}
    return read_blocks(part_blocks(row_groups, refs), num_cpus, order)


def _read_part_texts(part: str, groups: list[int], texts: ray.ObjectRef | None) -> pa.Table:
    return read_part(part, groups, None if texts is None else ray.get(texts))
