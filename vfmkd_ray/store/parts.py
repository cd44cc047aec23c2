"""Writing and listing the Parquet parts of a feature-store dataset.

A part becomes visible only when complete (``storage.write_bytes_atomic``), and its name is a hash
of the image ids it holds, so a retried write task replaces its own part instead of adding a copy.
``PartWriter`` stores only finite features: ``schema.build_table`` raises ``FeatureStoreError``
naming the image and layer for NaN/inf teacher outputs, so precompute fails instead of storing them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vfmkd_ray import storage
from vfmkd_ray.store.channel_stats import RunningStats, footer_metadata, part_stats, read_footer_stats
from vfmkd_ray.store.errors import FeatureStoreError
from vfmkd_ray.store.index_rows import index_rows, row_bytes
from vfmkd_ray.store.schema import build_table, refuse_extension_types

PART_GLOB = "part-*.parquet"
INDEX_ROWS_COLUMN = "index_rows"  # PartWriter's output: the part's store.index rows, Arrow IPC bytes


KEY_STATISTICS = ["image_id", "view"]


def part_name(row_keys: list[str]) -> str:
    """``part-<hash of the rows' "image_id:view" keys>.parquet``."""
    digest = hashlib.sha1("\n".join(sorted(row_keys)).encode()).hexdigest()[:20]
    return f"part-{digest}.parquet"


def write_part(dataset: str, table: pa.Table) -> tuple[str, pa.Table]:
    """Writes ``table`` as one part of ``dataset``; returns the part's URI and its ``store.index``
    rows (read from the bytes written, so the index never needs to open the part again)."""
    sink = pa.BufferOutputStream()
    # One row per row group, so a split, a view or another teacher's lookup reads one row's bytes.
    # Min/max statistics only for the keys: every reader parses the footer, and those of an int8
    # row's 1 KB scale blob were a third of it (nothing reads them).
    pq.write_table(table, sink, compression="zstd", row_group_size=1, write_statistics=KEY_STATISTICS)
    ids, views = table.column("image_id").to_pylist(), table.column("view").to_pylist()
    keys = [f"{i}:{v}" for i, v in zip(ids, views, strict=True)]
    uri = storage.join(dataset, part_name(keys))
    data = sink.getvalue()
    storage.write_bytes_atomic(uri, data.to_pybytes())
    return uri, index_rows(pq.ParquetFile(pa.BufferReader(data)), uri)


class PartWriter:
    """Ray Data ``map_batches`` callable: one batch of teacher outputs -> one stored part.

    Raises:
        FeatureStoreError: a teacher output is NaN/inf or beyond the codec's range.
        StorageError: the part could not be written (a full disk, an endpoint down); it names the
            part's URI, and no partial part is left.
    """

    def __init__(self, dataset: str, layers: list[str], codec: str, input_size: int | None = None):
        """``input_size``: the teacher's, so that the channel statistics leave the letterbox
        padding out (None: over every position)."""
        self.dataset, self.layers, self.codec, self.input_size = dataset, layers, codec, input_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        table = build_table(batch, self.layers, self.codec)
        # The part's own channel statistics travel in its footer (store.channel_stats).
        table = table.replace_schema_metadata(
            footer_metadata(part_stats(table, self.layers, self.codec, self.input_size))
        )
        uri, index = write_part(self.dataset, table)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, index.schema) as stream:
            stream.write_table(index)
        return {
            "part": np.array([uri]),
            "rows": np.array([table.num_rows]),
            INDEX_ROWS_COLUMN: np.array([sink.getvalue().to_pybytes()], dtype=object),
        }


def list_parts(dataset: str) -> list[str]:
    return storage.list_files(dataset, PART_GLOB)


@contextmanager
def open_parquet(part_uri: str) -> Iterator[pq.ParquetFile]:
    """One part as a ``ParquetFile``; storage errors inside the block name the part's URI. A part
    with a column of an Arrow extension type is refused before any value is read
    (``schema.refuse_extension_types``)."""
    with ExitStack() as stack:
        source = stack.enter_context(storage.open_random_access(part_uri))
        with storage.access(part_uri):
            parquet = pq.ParquetFile(source)
        refuse_extension_types(parquet.schema_arrow, part_uri)  # a FeatureStoreError, not storage's
        with storage.access(part_uri):
            yield parquet


def part_channel_stats(part_uri: str) -> dict[str, RunningStats] | None:
    """The channel statistics in a part's footer (None: written before they were kept)."""
    with open_parquet(part_uri) as parquet:
        return read_footer_stats(parquet.schema_arrow.metadata)


def read_part(part_uri: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of one part (all columns unless ``columns``); errors name the part's URI."""
    with open_parquet(part_uri) as parquet:
        return parquet.read(columns=columns)


def read_row_groups(part_uri: str, groups: list[int]) -> tuple[pa.Table, list[int]]:
    """The rows of ``groups`` of one part (every column) and, per row, its share of the compressed
    bytes read (the column chunks of its row group; the footer aside): what the read cost.

    Raises:
        FeatureStoreError: the part has fewer row groups than ``groups`` names (rewritten since).
    """
    with open_parquet(part_uri) as parquet:
        meta = parquet.metadata
        table = parquet.read_row_groups(groups) if not groups or max(groups) < meta.num_row_groups else None
    if table is None:
        raise FeatureStoreError(
            f"part {part_uri} has {meta.num_row_groups} row groups, the store's index names row group "
            f"{max(groups)}: the part was rewritten after precompute; run "
            f"`vfmkd verify --store {part_uri.rsplit('/', 1)[0]} --all`"
        )
    return table, [share for group in groups for share in row_bytes(meta, group)]


def read_part_schema(part_uri: str) -> pa.Schema:
    with open_parquet(part_uri) as parquet:
        return parquet.schema_arrow


def read_column(part_uri: str, column: str) -> list:
    return read_part(part_uri, [column]).column(column).to_pylist()


def stored_image_ids(dataset: str) -> list[str]:
    """Every ``image_id`` in every part of ``dataset`` (with repeats, if a store has any)."""
    return [image_id for ids in ids_by_part(dataset).values() for image_id in ids]


def ids_by_part(dataset: str) -> dict[str, list[str]]:
    """Part URI -> the image ids it holds, in part order."""
    return {part: [str(i) for i in read_column(part, "image_id")] for part in list_parts(dataset)}


def duplicate_ids(image_ids: list[str]) -> list[str]:
    return sorted(image_id for image_id, count in Counter(image_ids).items() if count > 1)
