"""The collectives of the training loop: the step-count agreement that keeps DDP in lock-step,
sum-and-count means across workers, gathering every worker's values and sharing rank 0's."""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def all_workers_have(has_batch: bool, device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
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
    dist.all_gather_object(gathered, list(values))
    return [value for part in gathered for value in part]


def from_rank_zero(value: T) -> T:
    """Rank 0's ``value`` on every worker (picklable)."""
    if not _distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _keys_of_all_workers(sums: dict) -> set[str]:
    """The union of every worker's keys: an all-reduce over different key lists would pair one
    worker's value with another's different metric (or hang)."""
    if not _distributed():
        return set(sums)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sorted(sums))
    return set().union(*gathered)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def max_across_workers(value: float, device) -> float:
    packed = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return float(packed[0])
