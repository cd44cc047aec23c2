"""Shared fixtures: tiny configs and tiny synthetic datasets, written under tmp_path."""

from __future__ import annotations

import pytest

from vfmkd_ray.config import ExperimentConfig, load_config
from vfmkd_ray.store.manifest import LayerSpec, Manifest


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


@pytest.fixture
def make_manifest():
    """Builds a store manifest for one fp16 layer, as precompute would write it."""

    def build(layer: str, shape: tuple[int, int, int], rows: int, input_size: int = 64) -> Manifest:
        return Manifest(
            schema_version=1,
            teacher="sam_vit_b",
            teacher_weights="random(seed=0)",
            input_size=input_size,
            layers={layer: LayerSpec(shape=shape, stride=input_size // shape[-1])},
            codec="fp16",
            augment="none",
            row_count=rows,
            num_parts=1,
            dataset_fingerprint="test",
        )

    return build
