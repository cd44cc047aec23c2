"""The data plane's peer: the decode stage through Ray Data against a torch ``DataLoader``, equal cores.

Both read the same store's parts with the product's read task (``store.ray_source.read_part``, with
each part's own rows' annotations, as ``training.streams`` attaches them) and make samples with the
same ``TrainSampleDecoder`` (the YOLOv8-s mosaic recipe at 640 px, targets warped). The Ray path is
``training.streams``' (one task per part, ``map_batches`` of Arrow blocks, unreserved) read as a
Train worker reads it (split by Ray Train's ``DataConfig``, ``iter_torch_batches``) on a local Ray
of ``cores`` CPUs; the peer is what a user without Ray would write: an ``IterableDataset`` whose
``cores`` persistent workers take every ``cores``-th part. No training step: the figure is the rate
at which each can feed one. Each path runs ``passes`` passes; the rate is that of the later ones
(the first starts the workers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import ray
import torch

from benchmarks.data_plane_workloads import part_annotations
from benchmarks.figures import Figure, ratio
from benchmarks.worker_shard import decoded_shard
from vfmkd_ray.data.coco import ImageAnnotations
from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
from vfmkd_ray.ray_session import local_ray_system_config
from vfmkd_ray.store.manifest import Manifest, StoreDataset
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.ray_source import read_part, read_store_rows

SECTION = "data plane"
FIRST_BATCH = (
    "a pass's start: the DataLoader's persistent workers yield a sample at a time; a Ray decode task "
    "yields its whole part, and at 0.25 CPU four tasks share each CPU and finish together"
)
BATCH = 8
AUTO_CHOICE = {  # what data.decode_num_cpus: auto (the default) picks where
    0.25: "auto's choice where the Train workers may leave no whole CPU free",
    1.0: "auto's choice where a whole CPU is free beside the Train workers",
}


class PartSamples(torch.utils.data.IterableDataset):
    """A ``DataLoader`` peer's dataset: each worker reads every ``num_workers``-th planned part with
    the product's read task (``texts``: a part's row texts as JSON, as the Ray source attaches them)
    and yields its decoded samples one by one (the ``DataLoader`` batches them)."""

    def __init__(
        self,
        row_groups: dict[str, list[int]],
        decoder: TrainSampleDecoder,
        texts: dict[str, str] | None = None,
    ):
        self.row_groups, self.decoder, self.texts = row_groups, decoder, texts or {}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        worker = torch.utils.data.get_worker_info()
        parts = list(self.row_groups.items())
        if worker is not None:
            parts = parts[worker.id :: worker.num_workers]
        for part, groups in parts:
            for out in self.decoder(read_part(part, groups, self.texts.get(part))):
                for row in range(len(out["image"])):
                    yield {column: values[row] for column, values in out.items()}


def peer_figures(
    dataset: str,
    manifest: Manifest,
    images: dict[str, tuple[str, ImageAnnotations]],
    cores: int,
    pipeline,
    student_size: int,
    max_objects: int,
    passes: int = 3,
) -> list[Figure]:
    decoder = TrainSampleDecoder(
        StoreDataset("bench", dataset, manifest),
        SampleSpec(student_size, "none", max_objects, pipeline=pipeline),
    )
    row_groups = {part: list(range(pq.ParquetFile(part).num_row_groups)) for part in list_parts(dataset)}
    texts = part_annotations(dataset, images)
    rows = sum(len(groups) for groups in row_groups.values())
    passes_by_path = {"DataLoader": _loader_passes(row_groups, texts, decoder, cores, passes)}
    ray.shutdown()
    ray.init(  # as ensure_ray starts a local Ray for training: no dashboard
        num_cpus=cores,
        include_dashboard=False,
        logging_level="ERROR",
        _system_config=local_ray_system_config(),
    )
    try:
        for num_cpus in (0.25, 1.0):
            name = f"Ray path, decode_num_cpus {num_cpus}"
            passes_by_path[name] = _ray_passes(row_groups, texts, decoder, num_cpus, passes)
    finally:
        ray.shutdown()
    note = (
        f"{rows} rows of SAM ViT fp16 + 640 px JPEGs in {len(row_groups)} parts, mosaic + warp, "
        f"{cores} cores, passes 2-{passes}"
    )
    rates = {name: [p.images_per_s for p in timed] for name, timed in passes_by_path.items()}
    figures = [Figure(SECTION, f"decode stage: {name}", "images/s", r, note) for name, r in rates.items()]
    figures += [
        Figure(SECTION, f"first batch: {name}", "s", [p.first_batch_s for p in timed], FIRST_BATCH)
        for name, timed in passes_by_path.items()
    ]
    for name, cpus in zip(rates, (None, 0.25, 1.0), strict=True):
        if cpus is not None:
            figures.append(
                ratio(
                    SECTION,
                    f"{name} / DataLoader",
                    rates[name],
                    rates["DataLoader"],
                    target=">= 1.0",
                    note=AUTO_CHOICE[cpus],
                )
            )
    return figures


def _loader_passes(row_groups, texts, decoder, cores: int, passes: int) -> list[TimedPass]:
    loader = torch.utils.data.DataLoader(
        PartSamples(row_groups, decoder, {part: json.dumps(t) for part, t in texts.items()}),
        batch_size=BATCH,
        num_workers=cores,
        persistent_workers=True,
    )
    return _timed_passes(lambda: iter(loader), passes)


def _ray_passes(row_groups, texts, decoder, num_cpus: float, passes: int) -> list[TimedPass]:
    shard = decoded_shard(read_store_rows(row_groups, num_cpus, texts), decoder, num_cpus)  # split once
    return _timed_passes(lambda: shard.iter_torch_batches(batch_size=BATCH, prefetch_batches=1), passes)


@dataclass(frozen=True)
class TimedPass:
    images_per_s: float  # over the whole pass, its start included
    first_batch_s: float


def _timed_passes(batches, passes: int) -> list[TimedPass]:
    """Every pass but the first (which starts the workers), each timed from the iterator's request."""
    timed = []
    for _ in range(passes):
        started, images, first = time.perf_counter(), 0, None
        for batch in batches():
            first = first if first is not None else time.perf_counter() - started
            images += len(batch["image"])
        if first is None:
            raise RuntimeError("a pass yielded no batch: the store or the decoder lost every row")
        timed.append(TimedPass(images / (time.perf_counter() - started), first))
    return timed[1:]
