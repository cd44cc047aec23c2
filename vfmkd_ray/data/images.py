"""Image decoding and the one preprocessing shared by teachers and students.

Images are resized so the longest side equals the input size and padded bottom/right to a square
(SAM's convention); the unpadded height and width travel with the image so losses can mask the pad.
Pixels stay uint8 until they reach the model, which keeps Ray object-store traffic 4x smaller.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BadImageError(ValueError):
    """An image that cannot be read or decoded; the message names its URI."""


def decode_image(data: bytes, uri: str) -> np.ndarray:
    """RGB uint8 HWC array from encoded bytes."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BadImageError(f"cannot decode image {uri}: {err}") from None


def is_flipped(aug_seed: int, policy: str) -> bool:
    """Whether the seeded augmentation mirrors the image: the one draw that images, stored teacher
    features and ground-truth targets all replay."""
    if policy == "none":
        return False
    if policy == "hflip":
        return bool(np.random.default_rng(aug_seed).random() < 0.5)
    raise ValueError(f"unknown augmentation policy {policy!r}; valid: none, hflip")


def augment(image_HWC: np.ndarray, aug_seed: int, policy: str) -> np.ndarray:
    """The seeded augmentation that the teacher saw, replayed identically for the student."""
    return image_HWC[:, ::-1] if is_flipped(aug_seed, policy) else image_HWC


def letterbox(image_HWC: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize the longest side to ``size``, pad bottom/right with zeros.

    Returns:
        The ``3 x size x size`` uint8 canvas and the (height, width) of the unpadded content.
    """
    height, width = image_HWC.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = np.asarray(Image.fromarray(image_HWC).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.zeros((3, size, size), dtype=np.uint8)
    canvas[:, :new_h, :new_w] = resized.transpose(2, 0, 1)
    return canvas, (new_h, new_w)
