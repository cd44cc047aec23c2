"""``benchmarks.worker_shard``: the shard a Train worker reads runs Ray Data's executor outside the
reading process, keeps the stream's own settings, and yields every row in each epoch iterated from
one split."""

import threading
import time

import pytest

from benchmarks.worker_shard import worker_shard
from vfmkd_ray.training.streams import run_unreserved

pytestmark = pytest.mark.usefixtures("local_ray")


def executor_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("StreamingExecutor")]


def staggered(batch: dict) -> dict:
    """Block k finishes 0.3 k s after block 0: the stream is still running when a batch arrives."""
    time.sleep(0.3 * (int(batch["id"][0]) // 10))
    return batch


def test_the_worker_shard_runs_the_executor_outside_this_process_every_epoch():
    import ray.data

    stream = ray.data.range(40, override_num_blocks=4).map_batches(staggered, batch_size=None)

    seen_in_process = []
    for _batch in stream.iter_batches(batch_size=10):  # the control: iterated here, it runs here
        seen_in_process += executor_threads()
    assert seen_in_process

    run_unreserved(stream, sources=1)  # the product's setting for a stream read from one source
    shard = worker_shard(stream)
    assert shard.get_context().op_resource_reservation_enabled is False
    for _ in range(2):  # split once, iterated per epoch as a Train worker iterates it
        ids, threads = [], []
        for batch in shard.iter_batches(batch_size=10):
            ids += batch["id"].tolist()
            threads += executor_threads()
        assert sorted(ids) == list(range(40))
        assert not threads
