"""Collectives on a real 2-process gloo group: workers whose batches produced different metric keys
(a head that found no crops, an empty shard) still agree on every mean, and a large object
collective leaves no lasting OpenMP team behind (one would slow every later step)."""

import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.local_cluster import free_port
from vfmkd_ray.training.collectives import from_rank_zero, gather_across_workers, mean_across_workers

LARGE = 200_000  # ints: a pickle of about 1 MB, far over ATen's 32 KiB parallel grain


def _means_worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        sums = {"loss": (2.0 + rank, 1), "det/nwd": (3.0 * (rank + 1), 1)}
        if rank == 0:
            sums["det/crops"] = (10.0, 2)  # only this worker's batches had clusters to crop
        results[rank] = mean_across_workers(sums, torch.device("cpu"))
        # A worker whose shard was empty has no keys at all.
        results[rank + 2] = mean_across_workers({} if rank else {"idle": (1.0, 1)}, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_workers_with_different_keys_agree_on_every_mean():
    results = mp.Manager().dict()
    mp.spawn(_means_worker, args=(free_port(), results), nprocs=2)
    expected = {"loss": 2.5, "det/nwd": 4.5, "det/crops": 5.0}
    assert results[0] == results[1] == expected
    assert results[2] == results[3] == {"idle": 1.0}, "an empty worker joins the other's reduction"


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _threads_settled(expected: int) -> int:
    """The thread count once exiting threads are gone (a thread leaving a freed OpenMP team may
    still be listed for a moment), or the last count after about 2 s."""
    count = _threads()
    for _ in range(40):
        if count <= expected:
            break
        time.sleep(0.05)
        count = _threads()
    return count


def _objects_worker(rank: int, port: int, world_size: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(2)
        torch.ones(1 << 20).mul_(2.0)  # this thread's own OpenMP team, started before counting
        before = _threads()
        gathered = gather_across_workers([rank] * LARGE)
        shared = from_rank_zero(list(range(LARGE)) if rank == 0 else None)
        results[rank] = {
            "gathered": gathered == [r for r in range(world_size) for _ in range(LARGE)],
            "shared": shared == list(range(LARGE)),
            "new_threads": _threads_settled(before) - before,
        }
    finally:
        dist.destroy_process_group()


def test_large_object_collectives_leave_no_thread_behind():
    """gloo copies a payload over the parallel grain on its own worker thread, which then keeps an
    OpenMP team of its own: libgomp, managing more threads than CPUs, stops spinning and every later
    parallel op pays a futex wake. The object collectives run on a group that ends with the call."""
    results = mp.Manager().dict()
    mp.spawn(_objects_worker, args=(free_port(), 2, results), nprocs=2)
    for rank in (0, 1):
        assert results[rank] == {"gathered": True, "shared": True, "new_threads": 0}, (rank, results[rank])


def test_a_one_worker_group_leaves_no_thread_behind():
    """Ray Train makes a process group for a single worker too: its collectives are the values
    (the default group's gather started a lasting thread here as well)."""
    results = mp.Manager().dict()
    mp.spawn(_objects_worker, args=(free_port(), 1, results), nprocs=1)
    assert results[0] == {"gathered": True, "shared": True, "new_threads": 0}
