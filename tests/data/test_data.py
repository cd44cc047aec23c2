"""Synthetic data, COCO records, image decoding and the Ray-free sample stages."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.image_loader import ImageLoader
from vfmkd_ray.data.image_tensors import sobel_edges, valid_mask
from vfmkd_ray.data.images import BadImageError, letterbox
from vfmkd_ray.data.samples import load_letterboxed
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.synthetic import write_synthetic_coco


def test_synthetic_dataset_is_coco_with_boxes_and_masks(tiny_config):
    assert write_synthetic_coco(tiny_config.data) == 16
    records = read_image_records(tiny_config.data)
    assert len(records) == 16 and records[0].image_id == "1"
    coco = json.loads(Path(tiny_config.data.root, "annotations.json").read_text())
    assert coco["annotations"]
    assert {c["name"] for c in coco["categories"]} == {"rectangle", "ellipse", "triangle"}
    ann = coco["annotations"][0]
    assert len(ann["bbox"]) == 4 and ann["segmentation"][0] and ann["area"] > 0
    assert write_synthetic_coco(tiny_config.data) == 16  # a second call reuses the dataset


def test_letterbox_keeps_aspect_and_pads_bottom_right():
    image = np.full((30, 60, 3), 200, np.uint8)
    canvas, (height, width) = letterbox(image, 64)
    assert canvas.shape == (3, 64, 64) and (height, width) == (32, 64)
    assert canvas[:, :32].min() == 200 and canvas[:, 32:].max() == 0
    mask = valid_mask(torch.tensor([[height, width]]), 64, (4, 4))
    assert mask[0, 0, :, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_missing_and_corrupt_images_name_their_uri(tmp_path):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(BadImageError, match="image not found: .*nope.png"):
        load_letterboxed(missing, 64, 0, "none")
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG not really")
    with pytest.raises(BadImageError, match="cannot decode image .*bad.png"):
        batch = {
            "image_id": np.array(["7"]),
            "image_uri": np.array([str(corrupt)]),
            "aug_seed": np.array([0]),
        }
        list(ImageLoader(64, "none")(batch))


def test_unreadable_annotations_are_named(tmp_path, tiny_config):
    cfg = tiny_config.data.model_copy(update={"root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        read_image_records(cfg)
    (tmp_path / "annotations.json").write_text('{"images": [{"id": 1}]}')
    with pytest.raises(ValueError, match="not a COCO annotations file"):
        read_image_records(cfg)


def test_split_is_stable_and_near_the_fraction():
    ids = [str(i) for i in range(2000)]
    val = [i for i in ids if is_validation(i, 0.2)]
    assert 0.17 < len(val) / len(ids) < 0.23
    assert val == [i for i in ids if is_validation(i, 0.2)]


def test_sobel_edges_fire_on_a_step():
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 1.0
    edges = sobel_edges(image)
    assert edges[0, 0, 5, 7:9].min() == 1.0 and edges[0, 0, 5, 2] == 0.0


def test_plain_image_folder_without_annotations(tiny_config, tmp_path):
    write_synthetic_coco(tiny_config.data)
    folder = tiny_config.data.model_copy(update={"annotations": None})
    records = read_image_records(folder)
    assert len(records) == 16 and records[0].image_id == "000001"
    assert records[0].image_uri.endswith("images/000001.png")
    empty = folder.model_copy(update={"root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="no images"):
        read_image_records(empty)
