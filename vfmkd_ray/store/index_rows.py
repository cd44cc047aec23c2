"""The rows ``store.index`` holds for one part, read from an open ``ParquetFile``: shared by the
part writer (from the bytes it just wrote) and the index's scan of parts already in storage."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

VIEW_COLUMN = "view"  # in parts of schema 3+; older parts hold view 0 only
INDEX_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        (VIEW_COLUMN, pa.int16()),
        ("part", pa.string()),
        ("row_group", pa.int32()),
        ("row", pa.int32()),
        ("aug_seed", pa.int64()),
        ("nbytes", pa.int64()),  # the row's share of its row group's compressed bytes
    ]
)


def part_file(part_uri: str) -> str:
    return part_uri.rstrip("/").rsplit("/", 1)[-1]


def row_bytes(meta: pq.FileMetaData, group: int) -> list[int]:
    """Each row's share of row group ``group``'s compressed column chunks (the footer aside)."""
    row_group = meta.row_group(group)
    size = sum(row_group.column(c).total_compressed_size for c in range(row_group.num_columns))
    return [size // max(1, row_group.num_rows)] * row_group.num_rows


def row_keys(index: pa.Table) -> pa.Array:
    """``image_id:view`` per index row: what identifies a stored row."""
    views = pc.cast(index.column(VIEW_COLUMN), pa.string())
    return pc.binary_join_element_wise(index.column("image_id"), views, ":")


def index_rows(parquet: pq.ParquetFile, part_uri: str) -> pa.Table:
    names = parquet.schema_arrow.names
    columns = ["image_id", "aug_seed"] + ([VIEW_COLUMN] if VIEW_COLUMN in names else [])
    keys = parquet.read(columns=columns)
    meta = parquet.metadata
    groups, rows, nbytes = [], [], []
    for group in range(meta.num_row_groups):
        shares = row_bytes(meta, group)
        groups += [group] * len(shares)
        rows += list(range(len(shares)))
        nbytes += shares
    count = keys.num_rows
    views = keys.column(VIEW_COLUMN) if VIEW_COLUMN in columns else pa.array([0] * count, pa.int16())
    return pa.table(
        [
            keys.column("image_id").cast(pa.string()),
            views.cast(pa.int16()),
            pa.array([part_file(part_uri)] * count, pa.string()),
            pa.array(groups, pa.int32()),
            pa.array(rows, pa.int32()),
            keys.column("aug_seed").cast(pa.int64()),
            pa.array(nbytes, pa.int64()),
        ],
        schema=INDEX_SCHEMA,
    )
