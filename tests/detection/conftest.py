"""Tiny detection configs: the synthetic tiny-object set at 128 px and a YOLOv8-n detector."""

import pytest

from tests.conftest import tiny_overrides
from vfmkd_ray.config import load_config


def detection_overrides(root) -> list[str]:
    return [
        *tiny_overrides(root),
        "name=tiny_det",
        "task=detection",
        "distill.terms={}",
        "data.synthetic.kind=tiny_objects",
        "data.synthetic.image_size=128",
        "data.synthetic.clusters=2",
        "data.synthetic.objects_per_cluster=10",
        "detection.input_size=128",
        "detection.patch_size=64",
        "detection.neck_channels=32",
        "detection.head_channels=32",
    ]


@pytest.fixture
def detection_config(tmp_path):
    return load_config(None, detection_overrides(tmp_path))
