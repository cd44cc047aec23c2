"""Ray Data sources whose order is chosen again at every pass: a fixed list of blocks in a new
order, or small rows regrouped into new blocks.

Ray Data plans a source at the start of every pass over a dataset (each epoch's iteration of a Train
worker's shard is one) and streams its read tasks' blocks roughly in the order it gets them. So
``OrderedBlocks`` asks its ``order`` for a key when a pass is planned (in the process that plans it)
and hands out its blocks in that key's permutation (``data.epoch_order``), each block's rows
permuted too; with no key, in list order, rows as read. Planning reads nothing: a ``SourceBlock`` is
a row count and a function the read task calls (a store part's row groups). Small rows (image URIs
and annotations, ``RegroupedRows``) are instead cut into new blocks after a permutation of all of
them every pass, so what meets in a block changes across the whole split. Read tasks run as Ray
tasks on already-running worker processes, as a plain function's ``map_batches`` stage would: no
actor pool of fresh processes (each importing torch) per pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from vfmkd_ray.data.epoch_order import block_rows, permutation, regrouped

# Called when a pass is planned: the key of its order (``data.epoch_order``), or None: list order.
PassOrder = Callable[[], tuple[int, ...] | None]


@dataclass(frozen=True)
class SourceBlock:
    num_rows: int
    read: Callable[[], pa.Table]  # picklable: it runs in the read task


class OrderedBlocks(Datasource):
    def __init__(self, blocks: list[SourceBlock], order: PassOrder | None = None):
        super().__init__()
        self.blocks, self.order = blocks, order

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        """One task per block whatever ``parallelism`` says, in this pass's order."""
        key = self.order() if self.order is not None else None
        places = permutation(len(self.blocks), key) if key is not None else range(len(self.blocks))
        tasks = []
        for place in places:
            block = self.blocks[place]
            rows = block_rows(key, place, block.num_rows) if key is not None else None
            tasks.append(
                ReadTask(
                    partial(_read, block.read, rows),
                    BlockMetadata(
                        num_rows=block.num_rows, size_bytes=None, exec_stats=None, input_files=None
                    ),
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks


class RegroupedRows(Datasource):
    """Small rows (image URIs and their annotations, put in the object store once) cut into blocks
    of ``rows_per_block`` after a permutation of all of them per pass: each pass's blocks hold other
    rows, so what meets in a block (mosaic partners) changes from epoch to epoch across the split."""

    def __init__(self, table: pa.Table, rows_per_block: int, order: PassOrder | None = None):
        super().__init__()
        self.ref, self.num_rows = ray.put(table), table.num_rows
        self.rows_per_block, self.order = rows_per_block, order

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        key = self.order() if self.order is not None else None
        tasks = []
        for chunk in regrouped(self.num_rows, self.rows_per_block, key):
            metadata = BlockMetadata(num_rows=len(chunk), size_bytes=None, exec_stats=None, input_files=None)
            tasks.append(
                ReadTask(partial(_take, self.ref, chunk), metadata, per_task_row_limit=per_task_row_limit)
            )
        return tasks


def read_regrouped(
    table: pa.Table, rows_per_block: int, num_cpus: float, order: PassOrder | None = None
) -> ray.data.Dataset:
    """A dataset of ``table``'s rows regrouped into new blocks every pass (``RegroupedRows``)."""
    if not table.num_rows:
        raise ValueError("a dataset needs at least one row")
    blocks = -(-table.num_rows // rows_per_block)
    return ray.data.read_datasource(
        RegroupedRows(table, rows_per_block, order), num_cpus=num_cpus, override_num_blocks=blocks
    )


def _take(ref: ray.ObjectRef, rows: list[int]) -> list[pa.Table]:
    return [ray.get(ref).take(rows)]


def read_blocks(
    blocks: list[SourceBlock], num_cpus: float, order: PassOrder | None = None
) -> ray.data.Dataset:
    """A dataset of ``blocks``, one read task (of ``num_cpus``) each, ordered by ``order`` per pass."""
    if not blocks:
        raise ValueError("a dataset needs at least one block")
    return ray.data.read_datasource(
        OrderedBlocks(blocks, order), num_cpus=num_cpus, override_num_blocks=len(blocks)
    )


def _read(read: Callable[[], pa.Table], rows: list[int] | None) -> list[pa.Table]:
    table = read()
    return [table if rows is None else table.take(rows)]
