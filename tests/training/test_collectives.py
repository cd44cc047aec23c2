"""Means across workers on a real 2-process gloo group: workers whose batches produced different
metric keys (a head that found no crops, an empty shard) still agree on every mean."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vfmkd_ray.training.collectives import mean_across_workers


def _worker(rank: int, port: int, results) -> None:
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, results), nprocs=2)
    expected = {"loss": 2.5, "det/nwd": 4.5, "det/crops": 5.0}
    assert results[0] == results[1] == expected
    assert results[2] == results[3] == {"idle": 1.0}, "an empty worker joins the other's reduction"
