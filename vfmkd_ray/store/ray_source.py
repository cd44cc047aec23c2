"""The store as a Ray Data source: one read task per part, through the product's storage layer.

The driver already knows the part URIs, so a ``from_items`` list of parts plus a map stage that
reads each part with pyarrow replaces ``read_parquet``: on Ray 2.60 each ``read_parquet`` pass costs
about 2 s of planning here (four 2 MB parts: 1.9-2.7 s per pass, against 0.11-0.14 s this way), and
every epoch is a new pass. Reads also go through ``storage``, so S3 settings and errors are the same
as everywhere else.
"""

from __future__ import annotations

import pyarrow as pa
import ray

from vfmkd_ray.store.parts import read_part


def read_parts(batch: pa.Table) -> pa.Table:
    """``map_batches`` stage: a batch of part URIs -> the rows of those parts.

    A function, not a class: Ray Data runs it as tasks on already-running worker processes, where a
    class would start an actor pool of fresh processes (each importing torch) on every epoch's pass.
    """
    return pa.concat_tables([read_part(uri) for uri in batch.column("part").to_pylist()])


def read_store_rows(parts: list[str], num_cpus: float) -> ray.data.Dataset:
    """A dataset of every row of ``parts`` (the store's Parquet schema), one task per part."""
    if not parts:
        raise ValueError("the store has no parts to read")
    items = ray.data.from_items([{"part": part} for part in parts], override_num_blocks=len(parts))
    return items.map_batches(read_parts, batch_size=1, batch_format="pyarrow", num_cpus=num_cpus)
