"""``_index.parquet``: where every row of a store dataset lives, in one small file.

One index row per stored row: ``image_id``, ``view`` (the augmented view it holds), ``part`` (the
part's file name), ``row_group`` and ``row`` (inside that group), ``aug_seed`` and ``nbytes`` (the
compressed bytes of the row's row group: what reading it costs). Parts are written one row per row
group, so a split, a view or another teacher's lookup reads exactly the row groups it uses.

Reading an image-id column from every part costs 61-68% of reading the parts whole (Parquet
metadata dominates), and every listing paid it: precompute's resume scan, training start, each
extra teacher's row index. The index replaces those scans with one read. It is written at
precompute, before the manifest, and the manifest records its sha256: a manifest names exactly one
index, and an index that does not match is an error, not a silent fallback. Stores made before the
index existed (or parts written by an interrupted precompute) are scanned once, part by part.
"""

from __future__ import annotations

import hashlib
import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vfmkd_ray import storage
from vfmkd_ray.store.errors import FeatureStoreError
from vfmkd_ray.store.index_rows import INDEX_SCHEMA, index_rows, part_file
from vfmkd_ray.store.parts import list_parts, open_parquet
from vfmkd_ray.store.schema import refuse_extension_types

log = logging.getLogger(__name__)
INDEX_NAME = "_index.parquet"


def scan_part(part_uri: str) -> pa.Table:
    """The index rows of one part already in storage."""
    with open_parquet(part_uri) as parquet:
        return index_rows(parquet, part_uri)


def build_index(dataset: str, known: pa.Table | None = None) -> pa.Table:
    """The index of every part now in ``dataset``: rows of ``known`` whose part is still there, and a
    scan of the parts ``known`` does not cover (a store without an index, an interrupted run's
    parts). Sorted by part, then row group."""
    parts = list_parts(dataset)
    names = [part_file(p) for p in parts]
    tables = []
    if known is not None and known.num_rows:
        kept = known.filter(pc.is_in(known.column("part"), pa.array(names, pa.string())))
        tables.append(kept)
        covered = set(kept.column("part").unique().to_pylist())
    else:
        covered = set()
    todo = [p for p, name in zip(parts, names, strict=True) if name not in covered]
    if todo:
        log.info("indexing %d parts of %s", len(todo), dataset)
    tables += [scan_part(p) for p in todo]
    if not tables:
        return INDEX_SCHEMA.empty_table()
    return pa.concat_tables(tables).sort_by([("part", "ascending"), ("row_group", "ascending")])


def write_index(dataset: str, index: pa.Table) -> str:
    """Writes ``index`` atomically; returns its sha256, which the manifest records."""
    sink = pa.BufferOutputStream()
    pq.write_table(index, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    storage.write_bytes_atomic(storage.join(dataset, INDEX_NAME), data)
    return hashlib.sha256(data).hexdigest()


def read_index(dataset: str, index_sha256: str) -> pa.Table | None:
    """The index the manifest names (``index_sha256``; "" for a store made without one: None).

    Raises:
        FeatureStoreError: the file is missing or is not the one the manifest names.
    """
    if not index_sha256:
        return None
    uri = storage.join(dataset, INDEX_NAME)
    if not storage.exists(uri):
        raise FeatureStoreError(
            f"store {dataset} has no {INDEX_NAME} although its manifest names one: a copy is incomplete; "
            "run `vfmkd precompute` with this store's config to rebuild it"
        )
    data = storage.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != index_sha256:
        raise FeatureStoreError(
            f"{uri} is not the index the manifest names (sha256 differs): it was changed after precompute; "
            "run `vfmkd precompute` with this store's config to rebuild it"
        )
    parquet = pq.ParquetFile(pa.BufferReader(data))
    refuse_extension_types(parquet.schema_arrow, uri)  # its sha256 is in the store too: no guarantee
    return parquet.read().cast(INDEX_SCHEMA)


def load_index(dataset: str, index_sha256: str) -> pa.Table:
    """The store's index: its file, or (a store made before the index existed) a scan of its parts."""
    index = read_index(dataset, index_sha256)
    if index is not None:
        return index
    log.warning(
        "store %s has no %s: scanning every part (run `vfmkd precompute` with its config to write one)",
        dataset,
        INDEX_NAME,
    )
    return build_index(dataset)


def index_ids(index: pa.Table) -> list[str]:
    """The distinct image ids of ``index``, in index order."""
    return pc.unique(index.column("image_id")).to_pylist()
