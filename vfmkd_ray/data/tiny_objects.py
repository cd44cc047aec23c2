"""A synthetic tiny-object detection set, aerial-style: many small objects (a few pixels) packed in
a few dense clusters per image plus a few strays, several classes, written as COCO json.

Each class has its own shape and colour family, so a small detector can learn it in minutes on a
CPU; the clusters are what the YOLC crop search is for.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from vfmkd_ray.data.config import SyntheticConfig

TINY_CATEGORIES = (
    {"id": 1, "name": "car"},  # square
    {"id": 2, "name": "person"},  # disc
    {"id": 3, "name": "boat"},  # diamond
)
_COLOURS = ((220, 60, 50), (60, 200, 80), (70, 110, 230))
STRAYS = 3


def draw_tiny_object_image(
    rng: np.random.Generator, spec: SyntheticConfig
) -> tuple[bytes, int, int, list[tuple[int, list[float]]]]:
    """One PNG and its objects ``(category_id, [x, y, w, h])``."""
    size = spec.image_size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    background = rng.uniform(70, 150, size=3) + xs[..., None] * rng.uniform(-0.1, 0.1, 3)
    background = background + ys[..., None] * rng.uniform(-0.1, 0.1, 3) + rng.normal(0, 8, (size, size, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    low, high = spec.object_size
    centers = []
    for _ in range(int(rng.integers(1, spec.clusters + 1))):
        spread = size * rng.uniform(0.04, 0.08)
        cx, cy = rng.uniform(0.15 * size, 0.85 * size, size=2)
        count = int(rng.integers(max(2, spec.objects_per_cluster // 2), spec.objects_per_cluster + 1))
        centers += [(cx + rng.normal(0, spread), cy + rng.normal(0, spread)) for _ in range(count)]
    centers += [tuple(rng.uniform(0.05 * size, 0.95 * size, size=2)) for _ in range(STRAYS)]
    objects: list[tuple[int, list[float]]] = []
    placed: list[tuple[float, float, float]] = []
    for cx, cy in centers:
        side = float(rng.uniform(low, high))
        if not (side <= cx <= size - side and side <= cy <= size - side):
            continue
        if any((cx - px) ** 2 + (cy - py) ** 2 < (0.7 * (side + ps)) ** 2 for px, py, ps in placed):
            continue  # keep objects apart enough to stay separable at stride 4
        category = int(rng.integers(1, len(TINY_CATEGORIES) + 1))
        _draw(draw, category, cx, cy, side / 2, rng)
        placed.append((cx, cy, side))
        objects.append((category, [cx - side / 2, cy - side / 2, side, side]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), size, size, objects


def _draw(draw: ImageDraw.ImageDraw, category: int, cx: float, cy: float, half: float, rng) -> None:
    colour = tuple(int(np.clip(c + rng.normal(0, 15), 0, 255)) for c in _COLOURS[category - 1])
    if category == 1:
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=colour)
    elif category == 2:
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=colour)
    else:
        draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=colour)
