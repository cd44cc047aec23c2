"""The collectives of the training loop: the step-count agreement that keeps DDP in lock-step,
sum-and-count means across workers, gathering every worker's values and sharing rank 0's.

With one worker there is nobody to talk to, so nothing is sent (Ray Train sets up a process group
for one worker too). On a gloo run, a gather of picklable values travels on a group that lives for
that one call: see ``_object_group``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def all_workers_have(has_batch: bool, device) -> bool:
    if not _distributed():
        return has_batch
    flag = torch.tensor([1 if has_batch else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def mean_across_workers(sums: dict[str, tuple[float, int]], device) -> dict[str, float]:
    """Sum-and-count means over all workers of every key any worker has (a worker with an empty
    shard, or whose batches never produced a key, contributes nothing to it)."""
    return {key: total / max(count, 1) for key, (total, count) in totals_across_workers(sums, device).items()}


def totals_across_workers(sums: dict[str, tuple[float, int]], device) -> dict[str, tuple[float, float]]:
    """The (sum, count) pairs of every key any worker has, summed over all workers."""
    keys = sorted(_keys_of_all_workers(sums))
    rows = [list(sums.get(key, (0.0, 0))) for key in keys]
    packed = torch.tensor(rows, dtype=torch.float64, device=device).reshape(-1, 2)
    if _distributed() and keys:
        dist.all_reduce(packed)
    return {key: (float(packed[i, 0]), float(packed[i, 1])) for i, key in enumerate(keys)}


def gather_across_workers(values: list[T]) -> list[T]:
    """Every worker's ``values`` (picklable), concatenated in rank order (on every worker)."""
    if not _distributed():
        return list(values)
    gathered: list = [None] * dist.get_world_size()
    with _object_group() as group:
        dist.all_gather_object(gathered, list(values), group=group)
    return [value for part in gathered for value in part]


def from_rank_zero(value: T) -> T:
    """Rank 0's ``value`` on every worker (picklable). A broadcast of one tensor is no copy on
    gloo's threads (see ``_object_group``), so it takes the default group."""
    if not _distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def max_across_workers(value: float, device) -> float:
    packed = torch.tensor([value], dtype=torch.float64, device=device)
    if _distributed():
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return float(packed[0])


def _keys_of_all_workers(sums: dict) -> set[str]:
    """The union of every worker's keys: an all-reduce over different key lists would pair one
    worker's value with another's different metric (or hang). A few dozen metric names pickle far
    under the size where gloo's copy goes parallel, so they take the default group."""
    if not _distributed():
        return set(sums)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sorted(sums))
    return set().union(*gathered)


@contextmanager
def _object_group() -> Iterator[dist.ProcessGroup | None]:
    """For one object collective on a gloo run: a gloo group made for it and destroyed after it
    (every worker enters it); on any other backend, the default group.

    Why not the default group: gloo copies a payload larger than ATen's parallel grain (32 KiB) on
    one of its own worker threads, which then starts an OpenMP team of its own. While that thread
    lives, libgomp manages more threads than there are CPUs and stops spinning between parallel
    regions, so every later parallel op of the training step waits on a futex wake: a 1 MiB
    ``mul_`` went from 9 to 52 us, and CPU training slowed by about a sixth after the first in-loop
    COCO scoring (docs/performance.md). This group's threads, and their team, end with it."""
    if dist.get_backend() != dist.Backend.GLOO:
        # NCCL moves the pickle on the GPU, and a GPU run may have no gloo route between its nodes.
        yield None
        return
    group = dist.new_group(backend="gloo")
    try:
        yield group
    finally:
        dist.destroy_process_group(group)


def _distributed() -> bool:
    """Whether there are other workers: a one-worker group (Ray Train makes one) has nobody to ask."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
