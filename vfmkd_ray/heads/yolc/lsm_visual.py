"""Optional LSM pictures (``lsm_visualize``): an image with its crop rectangles, as PNG bytes that
rank 0 writes into the run directory."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from vfmkd_ray.heads.yolc.lsm import Crop


def lsm_overlay_png(image_CHW: np.ndarray, crops: list[Crop]) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(image_CHW.transpose(1, 2, 0)))
    draw = ImageDraw.Draw(image)
    for crop in crops:
        draw.rectangle(crop, outline=(255, 255, 0), width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
