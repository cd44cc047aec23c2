"""The shard a Ray Train worker iterates, for benchmarks that feed a loop without a ``TorchTrainer``.

A ``Dataset`` iterated in the benchmark's own process runs Ray Data's streaming executor as a
thread of that process. A Train worker's shard (``ray.train.get_dataset_shard``) does not: Ray
Train's ``DataConfig`` splits each stream with ``streaming_split``, whose executor runs in a
``SplitCoordinator`` actor. The difference is not small. While the consumer is slower than the
decode, Ray 2.60's ``DownstreamCapacityBackpressurePolicy`` lets the executor read no task output,
``ray.wait`` returns at once on the ready outputs, and the scheduling loop spins (about 2,800 steps/s
here). In the training process that spin competes with the step for the GIL: the scale benchmark's
training epoch ran at 0.25-0.60 of a ``DataLoader``'s images/s iterated in-process, and at
0.95-1.05 through the split (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable

import ray
import ray.data
import ray.train

from vfmkd_ray.training.streams import run_unreserved


def worker_shard(stream: ray.data.Dataset) -> ray.data.DataIterator:
    """What one Train worker's ``get_dataset_shard`` returns for ``stream``, by Ray Train's own
    ``DataConfig`` (the product's ``TorchTrainer`` takes its default)."""
    here = ray.get_runtime_context().get_node_id()  # Ray Train hints each worker's node
    splits = ray.train.DataConfig().configure(
        {"train": stream}, world_size=1, worker_handles=None, worker_node_ids=[here]
    )
    return splits[0]["train"]


def decoded_shard(rows: ray.data.Dataset, decoder: Callable, num_cpus: float) -> ray.data.DataIterator:
    """``rows`` (read from one source) decoded as ``training.streams`` decodes a training stream (a
    part's Arrow block per call, in tasks of ``num_cpus``, unreserved), as one Train worker's shard."""
    decoded = rows.map_batches(decoder, batch_size=None, num_cpus=num_cpus, batch_format="pyarrow")
    run_unreserved(decoded, sources=1)
    return worker_shard(decoded)
