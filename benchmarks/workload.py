"""The benchmarks' workload: the demo config at benchmark size, its store, and its batches in memory.

The plain-loop limit trains on exactly what the Ray path streams: the same store rows, decoded by
the same ``TrainSampleDecoder`` and ``BatchFeed``, but all of it done before the clock starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vfmkd_ray.config import ExperimentConfig, load_config
from vfmkd_ray.data.augment.block import BlockAugmentation
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.models.build import ModelParts
from vfmkd_ray.store.parts import list_parts, read_part
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.training.batch_feed import BatchFeed
from vfmkd_ray.training.teacher_stores import check_stores

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def bench_config(root: str, overrides: list[str]) -> ExperimentConfig:
    """The demo config with its data, store and runs under ``root``; ``overrides`` on top."""
    return load_config(
        DEMO_CONFIG,
        [
            "name=bench",
            f"data.root={root}/data",
            f"store.root={root}/store",
            f"train.storage_path={root}/runs",
            *overrides,
        ],
    )


def prepare_store(cfg: ExperimentConfig) -> None:
    """Synthetic images and the primary teacher's store (skipped where they already exist)."""
    write_synthetic_coco(cfg.data)
    run_precompute(cfg, [cfg.primary_teacher])


def raw_batches(
    cfg: ExperimentConfig, split: str = "train", pipeline: BlockAugmentation | None = None
) -> list[dict[str, torch.Tensor]]:
    """Every full ``train.batch_size`` batch of ``split`` as the worker's shard yields it: images,
    valid sizes, online flags and stored-form features, as CPU tensors; with ``pipeline``, the
    samples of its first epoch (augmented, the stored features carried as the run carries them)."""
    stores = check_stores(cfg, read_image_records(cfg.data))
    spec = SampleSpec(cfg.input_size, cfg.store.augment, pipeline=pipeline)
    decoder = TrainSampleDecoder(stores.primary, spec, max_pixels=cfg.data.max_image_pixels)
    samples = [
        out
        for part in list_parts(stores.primary.uri)
        for out in decoder(_split_rows(part_rows(part), cfg, split))
    ]
    columns = {key: np.concatenate([s[key] for s in samples]) for key in samples[0]}
    size = cfg.train.batch_size
    count = len(columns[next(iter(columns))]) // size
    return [
        {key: torch.from_numpy(v[i * size : (i + 1) * size]) for key, v in columns.items()}
        for i in range(count)
    ]


def _split_rows(rows: dict[str, np.ndarray], cfg: ExperimentConfig, split: str) -> dict[str, np.ndarray]:
    """The rows of one split (``training.streams`` plans this from the store index)."""
    keep = np.array(
        [is_validation(str(i), cfg.data.val_fraction) == (split == "val") for i in rows["image_id"]]
    )
    return {name: column[keep] for name, column in rows.items()}


def batch_feed(
    cfg: ExperimentConfig, parts: ModelParts, device: torch.device, teachers: dict | None = None
) -> BatchFeed:
    """The worker's ``BatchFeed`` for the primary teacher's store (``teachers`` for online rows)."""
    store = check_stores(cfg, read_image_records(cfg.data)).primary
    return BatchFeed(
        frozenset(parts.teacher_keys()),
        {store.alias: store.manifest.codec},
        device,
        cfg.train.batch_size,
        0,
        stored_teachers=teachers or {},
    )


def part_rows(part: str) -> dict[str, np.ndarray]:
    """A part's columns as NumPy arrays (object arrays for binary and list columns), the form Ray
    Data hands a ``map_batches`` stage."""
    table = read_part(part)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
