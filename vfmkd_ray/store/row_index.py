"""Reading single rows of a store dataset by ``image_id``: how a run's other teachers are joined.

The primary teacher's store streams through Ray Data; for each other teacher the driver builds a
``StoreRowIndex`` ((image id, view) -> part, row group, row) from that store's ``store.index`` and
the decode stage reads just the row groups it needs. Parts are written one row per row group, so a
lookup reads one row's bytes (ranged reads on object storage), not the whole part. No shuffle, no
Ray Data join.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import accumulate

import pyarrow as pa

from vfmkd_ray import storage
from vfmkd_ray.data.views import VIEW_RECORD_COLUMN
from vfmkd_ray.store.index import load_index
from vfmkd_ray.store.manifest import StoreDataset
from vfmkd_ray.store.parts import open_parquet
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.schema import (
    FIRST_CHECKSUM_VERSION,
    crc_column,
    dtype_column,
    feature_column,
    scale_column,
    shape_column,
)


@dataclass(frozen=True)
class StoreRowIndex:
    """Where each stored image's row lives in one dataset; picklable into Ray Data tasks."""

    store: StoreDataset
    parts: tuple[str, ...]
    # (image_id, view) -> (index into parts, row group, row within the group)
    locations: dict[tuple[str, int], tuple[int, int, int]] = field(repr=False)

    @classmethod
    def build(cls, store: StoreDataset, index: pa.Table | None = None) -> StoreRowIndex:
        """From ``index`` (the store's ``store.index``; loaded when not given)."""
        if index is None:
            index = load_index(store.uri, store.manifest.index_sha256)
        names = sorted(set(index.column("part").to_pylist()))
        number = {name: i for i, name in enumerate(names)}
        locations = {
            (image_id, view): (number[part], group, row)
            for image_id, view, part, group, row in zip(
                *(index.column(c).to_pylist() for c in ("image_id", "view", "part", "row_group", "row")),
                strict=True,
            )
        }
        return cls(store, tuple(storage.join(store.uri, name) for name in names), locations)

    def __contains__(self, key: object) -> bool:
        return key in self.locations

    def read_rows(self, keys: list[tuple[str, int]]) -> dict[str, list]:
        """The stored columns of ``keys`` ((image id, view) pairs) as a batch aligned with them
        (``image_id`` first), in the form ``reader.decode_row`` takes.

        Raises:
            FeatureStoreError: a key has no row, or a part lacks a column the manifest promises.
        """
        columns = self._columns()
        batch: dict[str, list] = {"image_id": [i for i, _ in keys]} | {c: [None] * len(keys) for c in columns}
        wanted: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for position, key in enumerate(keys):
            if key not in self.locations:
                raise FeatureStoreError(
                    f"image {key[0]} (view {key[1]}) has no row in store {self.store.uri}"
                )
            part_index, group, row = self.locations[key]
            wanted[part_index].append((position, group, row))
        for part_index, rows in wanted.items():
            part = self.parts[part_index]
            groups = sorted({group for _, group, _ in rows})
            with open_parquet(part) as parquet:
                missing = [c for c in columns if c not in parquet.schema_arrow.names]
                if not missing:
                    table = parquet.read_row_groups(groups, columns=columns)
                    sizes = [parquet.metadata.row_group(g).num_rows for g in groups]
            if missing:
                raise FeatureStoreError(f"part {part} of store {self.store.uri} has no columns {missing}")
            offsets = dict(zip(groups, [0, *accumulate(sizes)], strict=False))
            for position, group, row in rows:
                for column in columns:
                    batch[column][position] = table.column(column)[offsets[group] + row].as_py()
        return batch

    def _columns(self) -> list[str]:
        """What ``decode_row`` reads: features, shapes, dtypes, int8 scales and (schema 2+) checksums;
        and what says which canvas a row is of: ``aug_seed`` and, in a store of views, the view's
        record (``data.views``)."""
        manifest = self.store.manifest
        columns = ["aug_seed"] + ([VIEW_RECORD_COLUMN] if manifest.view_spec else [])
        for layer in manifest.layers:
            columns += [feature_column(layer), shape_column(layer), dtype_column(layer)]
            if manifest.codec == "int8":
                columns.append(scale_column(layer))
            if manifest.schema_version >= FIRST_CHECKSUM_VERSION:
                columns.append(crc_column(layer))
        return columns
