"""The data-plane benchmark's workloads: a real store of one teacher layer and the JPEGs its rows
point at (``benchmarks/data_plane``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from vfmkd_ray.data.coco import ImageAnnotations
from vfmkd_ray.data.pipeline import ANNOTATIONS_COLUMN
from vfmkd_ray.store.config import StoreConfig
from vfmkd_ray.store.manifest import LayerSpec, Manifest
from vfmkd_ray.store.parts import PartWriter, list_parts
from vfmkd_ray.store.ray_source import RowTexts
from vfmkd_ray.store.schema import SCHEMA_VERSION, feature_column

IMAGE_WH = (640, 480)
# The product's default layout: Ray Data pays a task (a few ms of raylet and driver time) per part
# and pass, and the part's footer is parsed once for all its rows, so the part size moves the ratios.
ROWS_PER_PART = StoreConfig.model_fields["rows_per_part"].default


@dataclass(frozen=True)
class Workload:
    name: str
    layer: str
    shape: tuple[int, int, int]
    input_size: int
    codec: str


WORKLOADS = (
    Workload("SAM ViT 1024 px fp16", "image_embed", (256, 64, 64), 1024, "fp16"),
    Workload("SAM ViT 1024 px int8", "image_embed", (256, 64, 64), 1024, "int8"),
    Workload("DINOv3-B 640 px fp16", "patch_tokens", (768, 40, 40), 640, "fp16"),
)


def write_images(root: str, count: int) -> dict[str, tuple[str, ImageAnnotations]]:
    """``count`` JPEGs of smooth colour with rectangles (what a camera's JPEG compresses like, more
    or less), each with its rectangles as boxes: image id -> (URI, annotations)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {}
    for index in range(count):
        coarse = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8))
        image = coarse.resize(IMAGE_WH, Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        boxes, labels = [], []
        for _ in range(int(rng.integers(3, 12))):
            x1, y1 = rng.integers(0, IMAGE_WH[0] - 40), rng.integers(0, IMAGE_WH[1] - 40)
            x2, y2 = x1 + rng.integers(20, 200), y1 + rng.integers(20, 160)
            draw.rectangle(
                (int(x1), int(y1), int(x2), int(y2)), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
            )
            boxes.append([float(x1), float(y1), float(min(x2, IMAGE_WH[0])), float(min(y2, IMAGE_WH[1]))])
            labels.append(int(rng.integers(0, 80)))
        uri = f"{root}/{index:05d}.jpg"
        image.save(uri, quality=90)
        images[f"img{index:05d}"] = (uri, ImageAnnotations(boxes, labels, image_id=f"img{index:05d}"))
    return images


def write_store(
    dataset: str,
    workload: Workload,
    images: dict[str, tuple[str, ImageAnnotations]],
    rows_per_part: int = ROWS_PER_PART,
) -> Manifest:
    """The workload's store over ``images`` (random features), and a manifest describing it."""
    rng = np.random.default_rng(1)
    writer = PartWriter(dataset, [workload.layer], workload.codec, workload.input_size)
    ids = list(images)
    for start in range(0, len(ids), rows_per_part):
        chunk = ids[start : start + rows_per_part]
        writer(
            {
                "image_id": np.array(chunk),
                "image_uri": np.array([images[i][0] for i in chunk]),
                "aug_seed": np.zeros(len(chunk), np.int64),
                "valid_h": np.full(len(chunk), workload.input_size * 3 // 4, np.int32),
                "valid_w": np.full(len(chunk), workload.input_size, np.int32),
                feature_column(workload.layer): rng.standard_normal((len(chunk), *workload.shape)).astype(
                    np.float32
                ),
            }
        )
    return Manifest(
        schema_version=SCHEMA_VERSION,
        teacher="bench",
        teacher_weights="random",
        input_size=workload.input_size,
        layers={
            workload.layer: LayerSpec(shape=workload.shape, stride=workload.input_size // workload.shape[1])
        },
        codec=workload.codec,
        augment="none",
        row_count=len(ids),
        num_parts=len(list_parts(dataset)),
        dataset_fingerprint="bench",
    )


def part_annotations(dataset: str, images: dict[str, tuple[str, ImageAnnotations]]) -> dict[str, RowTexts]:
    """Part -> the annotations column of its rows (image id -> JSON): what ``training.streams``
    attaches to each part's read task, its own rows' texts only."""
    return {
        part: {
            ANNOTATIONS_COLUMN: {
                str(i): images[str(i)][1].to_json()
                for i in pq.read_table(part, columns=["image_id"])["image_id"]
            }
        }
        for part in list_parts(dataset)
    }
