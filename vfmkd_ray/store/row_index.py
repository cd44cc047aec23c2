"""Reading single rows of a store dataset by ``image_id``: how a run's other teachers are joined.

The primary teacher's store streams through Ray Data; for each other teacher the driver builds a
``StoreRowIndex`` (image id -> part, row group, row) and the decode stage reads just the row groups
it needs. Parts are written one row per row group, so a lookup reads one row's bytes (ranged reads
on object storage), not the whole part. No shuffle, no Ray Data join.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import accumulate

from vfmkd_ray.store.manifest import StoreDataset
from vfmkd_ray.store.parts import list_parts, open_parquet
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
    # image_id -> (index into parts, row group, row within the group)
    locations: dict[str, tuple[int, int, int]] = field(repr=False)

    @classmethod
    def build(cls, store: StoreDataset) -> StoreRowIndex:
        parts = tuple(list_parts(store.uri))
        locations: dict[str, tuple[int, int, int]] = {}
        for part_index, part in enumerate(parts):
            with open_parquet(part) as parquet:
                ids = parquet.read(columns=["image_id"]).column("image_id").to_pylist()
                sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            starts = [0, *accumulate(sizes)]
            for group, size in enumerate(sizes):
                for row in range(size):
                    locations[ids[starts[group] + row]] = (part_index, group, row)
        return cls(store, parts, locations)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.locations

    def read_rows(self, image_ids: list[str]) -> dict[str, list]:
        """The stored columns of ``image_ids`` as a batch aligned with them (``image_id`` first),
        in the form ``reader.decode_row`` takes.

        Raises:
            FeatureStoreError: an id has no row, or a part lacks a column the manifest promises.
        """
        columns = self._columns()
        batch: dict[str, list] = {"image_id": list(image_ids)} | {c: [None] * len(image_ids) for c in columns}
        wanted: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for position, image_id in enumerate(image_ids):
            if image_id not in self.locations:
                raise FeatureStoreError(f"image {image_id} has no row in store {self.store.uri}")
            part_index, group, row = self.locations[image_id]
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
        """What ``decode_row`` reads: features, shapes, dtypes, int8 scales and (schema 2+) checksums."""
        manifest = self.store.manifest
        columns = ["aug_seed"]
        for layer in manifest.layers:
            columns += [feature_column(layer), shape_column(layer), dtype_column(layer)]
            if manifest.codec == "int8":
                columns.append(scale_column(layer))
            if manifest.schema_version >= FIRST_CHECKSUM_VERSION:
                columns.append(crc_column(layer))
        return columns
