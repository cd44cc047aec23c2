"""Shared fixtures: tiny configs and tiny synthetic datasets, written under tmp_path."""

from __future__ import annotations

import pytest

from vfmkd_ray.config import ExperimentConfig, load_config


def tiny_overrides(root) -> list[str]:
    """A config small enough for a CPU test: 16 images at 64 px, SAM ViT-B random, YOLOv8-n."""
    return [
        "name=tiny",
        f"data.root={root}/data",
        "data.synthetic.num_images=16",
        "data.synthetic.image_size=64",
        "data.synthetic.max_shapes=3",
        "data.val_fraction=0.25",
        "teacher.input_size=64",
        f"store.root={root}/store",
        "store.rows_per_part=4",
        "store.teacher_batch_size=4",
        f"train.storage_path={root}/runs",
        "train.epochs=2",
        "train.batch_size=2",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
    ]


@pytest.fixture
def tiny_config(tmp_path) -> ExperimentConfig:
    return load_config(None, tiny_overrides(tmp_path))
