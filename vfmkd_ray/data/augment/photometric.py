"""The photometric steps of a replay: Albu's draws (Blur, MedianBlur, ToGray and, in place of CLAHE,
a histogram equalisation; drawn with p 0.01 each, they stay on PIL) and MMYOLO's
YOLOv5HSVRandomAug (per-channel gains on OpenCV's hue (0-179, wrapping at 180), saturation and
value through lookup tables, MMYOLO's arithmetic). Boxes do not change."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from vfmkd_ray.data.augment.opencv import cv2
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
    hue, saturation, value = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    table = np.arange(256, dtype=np.float64)
    luts = (
        ((table * gains[0]) % 180).astype(np.uint8),
        np.clip(table * gains[1], 0, 255).astype(np.uint8),
        np.clip(table * gains[2], 0, 255).astype(np.uint8),
    )
    mapped = [cv2.LUT(band, lut) for band, lut in zip((hue, saturation, value), luts, strict=True)]
    return cv2.cvtColor(cv2.merge(mapped), cv2.COLOR_HSV2RGB)
