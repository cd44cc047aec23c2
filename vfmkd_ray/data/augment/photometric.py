"""The photometric steps of a replay: Albu's draws (Blur, MedianBlur, ToGray and, in place of CLAHE,
a histogram equalisation: PIL has no contrast-limited adaptive one) and MMYOLO's
YOLOv5HSVRandomAug (per-channel gains on hue, saturation and value through lookup tables; PIL's
hue runs 0-255 where OpenCV's runs 0-179, so the hue gain wraps at 256). Boxes do not change."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from vfmkd_ray.data.augment.record import AugmentRecord


def albu(image: np.ndarray, record: AugmentRecord) -> np.ndarray:
    if not (record.blur or record.median_blur or record.gray or record.equalize):
        return image
    picture = Image.fromarray(image)
    if record.blur:
        picture = picture.filter(ImageFilter.BoxBlur((record.blur - 1) / 2))
    if record.median_blur:
        picture = picture.filter(ImageFilter.MedianFilter(record.median_blur))
    if record.gray:
        picture = picture.convert("L").convert("RGB")
    if record.equalize:
        picture = ImageOps.equalize(picture)
    return np.asarray(picture)


def hsv(image: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    if gains == (1.0, 1.0, 1.0):
        return image
    channels = Image.fromarray(image).convert("HSV").split()
    table = np.arange(256, dtype=np.float64)
    hue = ((table * gains[0]) % 256).astype(np.uint8)
    saturation = np.clip(table * gains[1], 0, 255).astype(np.uint8)
    value = np.clip(table * gains[2], 0, 255).astype(np.uint8)
    mapped = [band.point(lut.tolist()) for band, lut in zip(channels, (hue, saturation, value), strict=True)]
    return np.asarray(Image.merge("HSV", mapped).convert("RGB"))
