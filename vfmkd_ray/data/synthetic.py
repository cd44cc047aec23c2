"""Small synthetic COCO datasets for the demo and tests: large shapes with boxes and polygon masks,
or dense tiny objects for detection (``synthetic.kind``)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
from PIL import Image, ImageDraw

from vfmkd_ray import storage
from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.data.tiny_objects import TINY_CATEGORIES, draw_tiny_object_image

CATEGORIES = (
    {"id": 1, "name": "rectangle"},
    {"id": 2, "name": "ellipse"},
    {"id": 3, "name": "triangle"},
)


def write_synthetic_coco(cfg: DataConfig) -> int:
    """Writes ``cfg.synthetic.num_images`` PNGs and a COCO json under ``cfg.root``.

    Returns the number of images; does nothing when the annotations file already exists.
    """
    if cfg.format != "coco" or cfg.annotations is None:
        raise ValueError(
            f"the synthetic dataset is written as a COCO file: data.format coco (not {cfg.format}) "
            "with data.annotations set"
        )
    root = storage.absolute(cfg.root)
    ann_uri = storage.join(root, cfg.annotations)
    if storage.exists(ann_uri):
        return len(json.loads(storage.read_text(ann_uri))["images"])
    spec = cfg.synthetic
    rng = np.random.default_rng(spec.seed)
    images, annotations = [], []
    for image_id in range(1, spec.num_images + 1):
        file_name = f"{image_id:06d}.png"
        if spec.kind == "tiny_objects":
            png, width, height, objects = draw_tiny_object_image(rng, spec)
            shapes = [(category, _rectangle(box)) for category, box in objects]
        else:
            width = spec.image_size
            height = int(spec.image_size * rng.uniform(0.75, 1.0))
            image, shapes = _draw_image(rng, width, height, spec.max_shapes)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            png = buffer.getvalue()
        storage.write_bytes_atomic(storage.join(root, cfg.images_dir, file_name), png)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for category_id, polygon in shapes:
            annotations.append(_annotation(len(annotations) + 1, image_id, category_id, polygon))
    categories = TINY_CATEGORIES if spec.kind == "tiny_objects" else CATEGORIES
    coco = {"images": images, "annotations": annotations, "categories": list(categories)}
    storage.write_text_atomic(ann_uri, json.dumps(coco))
    return len(images)


def _draw_image(
    rng: np.random.Generator, width: int, height: int, max_shapes: int
) -> tuple[Image.Image, list[tuple[int, list[float]]]]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    tilt = rng.uniform(-0.3, 0.3, size=(2, 3))
    background = base + xs[..., None] * tilt[0] + ys[..., None] * tilt[1]
    background += rng.normal(0, 6, size=background.shape)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        category_id = int(rng.integers(1, len(CATEGORIES) + 1))
        size = rng.uniform(0.08, 0.3) * min(width, height)
        cx, cy = rng.uniform(size, width - size), rng.uniform(size, height - size)
        polygon = _polygon(category_id, cx, cy, size, rng)
        draw.polygon(polygon, fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
        shapes.append((category_id, [coord for point in polygon for coord in point]))
    return image, shapes


def _polygon(category_id: int, cx: float, cy: float, size: float, rng: np.random.Generator):
    if category_id == 1:
        w, h = size, size * rng.uniform(0.5, 1.0)
        return [(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)]
    if category_id == 2:
        w, h = size, size * rng.uniform(0.5, 1.0)
        angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        return [(cx + w * math.cos(a), cy + h * math.sin(a)) for a in angles]
    start = rng.uniform(0, 2 * math.pi)
    return [
        (cx + size * math.cos(start + k * 2.0944), cy + size * math.sin(start + k * 2.0944)) for k in range(3)
    ]


def _rectangle(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def _annotation(ann_id: int, image_id: int, category_id: int, flat: list[float]) -> dict:
    xs, ys = flat[0::2], flat[1::2]
    x0, y0 = min(xs), min(ys)
    area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x0, y0, max(xs) - x0, max(ys) - y0],
        "segmentation": [flat],
        "area": area,
        "iscrowd": 0,
    }
