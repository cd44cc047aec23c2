"""Which row groups of the primary store one pass over a split and view reads, from the store's
index alone: the plan behind reading each stored byte once per epoch. Plain pyarrow, no Ray."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from vfmkd_ray import storage
from vfmkd_ray.store.index_rows import VIEW_COLUMN


@dataclass(frozen=True)
class PartReads:
    row_groups: dict[str, list[int]]  # part URI -> the row groups to read, ascending
    image_ids: dict[str, list[str]]  # part URI -> the images those row groups hold
    nbytes: int  # the compressed bytes of those row groups: what the pass reads


def plan_reads(index: pa.Table, dataset: str, image_ids: list[str], view: int) -> PartReads:
    """The rows of ``image_ids`` at ``view`` in the store at ``dataset`` whose index is ``index``."""
    chosen = index.filter(
        pc.and_(
            pc.equal(index.column(VIEW_COLUMN), view),
            pc.is_in(index.column("image_id"), value_set=pa.array(image_ids, pa.string())),
        )
    )
    by_part = chosen.group_by("part").aggregate([("row_group", "list"), ("image_id", "list")])
    row_groups, ids = {}, {}
    for name, groups, part_ids in zip(
        by_part.column("part").to_pylist(),
        by_part.column("row_group_list").to_pylist(),
        by_part.column("image_id_list").to_pylist(),
        strict=True,
    ):
        uri = storage.join(dataset, name)
        row_groups[uri], ids[uri] = sorted(groups), part_ids
    ordered = sorted(row_groups)  # the index's part order, whatever the aggregation's
    return PartReads(
        {u: row_groups[u] for u in ordered},
        {u: ids[u] for u in ordered},
        int(pc.sum(chosen.column("nbytes")).as_py() or 0),
    )
