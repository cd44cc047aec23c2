"""Tiny YOLC configs: the synthetic tiny-object set at 128 px, a YOLOv8-n backbone, the stride-4
neck and a yolc head."""

import pytest

from tests.conftest import tiny_overrides
from vfmkd_ray.config import load_config


def yolc_overrides(root) -> list[str]:
    return [
        *tiny_overrides(root),
        "name=tiny_det",
        "teachers={}",
        "distill.terms={}",
        "data.input_size=128",
        "data.synthetic.kind=tiny_objects",
        "data.synthetic.image_size=128",
        "data.synthetic.clusters=2",
        "data.synthetic.objects_per_cluster=10",
        "neck={type: stride4, channels: 32}",
        "heads.det={type: yolc, num_classes: 3, patch_size: 64, head_channels: 32}",
    ]


@pytest.fixture
def yolc_config(tmp_path):
    return load_config(None, yolc_overrides(tmp_path))
