"""Optional LSM pictures (``distill.lsm_visualize``): an image with its crop rectangles, as PNG in
the run directory only."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from vfmkd_ray import storage
from vfmkd_ray.detection.lsm import Crop


def save_lsm_overlay(image_CHW: np.ndarray, crops: list[Crop], uri: str) -> None:
    image = Image.fromarray(np.ascontiguousarray(image_CHW.transpose(1, 2, 0)))
    draw = ImageDraw.Draw(image)
    for crop in crops:
        draw.rectangle(crop, outline=(255, 255, 0), width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    storage.write_bytes_atomic(uri, buffer.getvalue())
