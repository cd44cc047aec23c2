"""Image decoding and the one preprocessing shared by teachers and students.

Decoding is defensive: the pixel count is checked from the header before any pixel is decoded
(``data.max_image_pixels``), the EXIF orientation is applied first (COCO boxes refer to the
displayed image), every PIL mode is brought to 8-bit RGB by one written rule (``to_rgb8``), and
the size can be checked against the annotations. Any failure is a ``BadImageError`` naming the
URI, which ``data.on_bad_sample: skip`` turns into a skipped sample.

Images are resized so the longest side equals the input size and padded bottom/right to a square
(SAM's convention); the unpadded height and width travel with the image so losses can mask the pad.
Pixels stay uint8 until they reach the model, which keeps Ray object-store traffic 4x smaller.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vfmkd_ray.data.config import DEFAULT_MAX_IMAGE_PIXELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # displayed with width and height swapped
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# What PIL and its plugins raise on malformed data (SyntaxError and struct.error from parsers).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class BadImageError(ValueError):
    """An image that cannot be read or decoded, or is too large or not the annotated size; the
    message names its URI."""


def decode_image(
    data: bytes,
    uri: str,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    expected_wh: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """RGB uint8 HWC array of the image as displayed (EXIF orientation applied).

    Args:
        data: the encoded file.
        uri: where it came from, for messages.
        max_pixels: the most ``width * height`` allowed (``data.max_image_pixels``), checked from
            the header before any pixel is decoded.
        expected_wh: the (width, height) the annotations give, compared with the displayed size;
            0 for unknown (not checked).

    Raises:
        BadImageError: undecodable, above ``max_pixels``, or not ``expected_wh``.
    """
    # ``max_pixels`` replaces PIL's process-global limit (set again on every call, as other code
    # may change it), which would raise a raw DecompressionBombError inside Image.open, or warn,
    # before the image could be named here.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image.size, uri, max_pixels)  # from the header: no pixel decoded yet
            ImageOps.exif_transpose(image, in_place=True)
            _check_size(image.size, expected_wh, uri)
            return to_rgb8(image)
    except BadImageError:
        raise
    except UnidentifiedImageError:  # PIL's message names only an in-memory buffer
        raise BadImageError(f"cannot decode image {uri}: not in an image format PIL can read") from None
    except _DECODE_ERRORS as err:
        raise BadImageError(f"cannot decode image {uri}: {err}") from None


def displayed_header_size(
    source: object, uri: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[int, int]:
    """(width, height) of an image as displayed (EXIF orientations 5-8 swap them), from its header
    alone: ``source`` is a binary file object; no pixel is decoded.

    Raises:
        BadImageError: not an image PIL reads, or above ``max_pixels``.
    """
    Image.MAX_IMAGE_PIXELS = None  # max_pixels is the limit (see decode_image)
    try:
        with Image.open(source) as image:
            width, height = image.size
            if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS:
                width, height = height, width
    except UnidentifiedImageError:
        raise BadImageError(f"cannot read image {uri}: not in an image format PIL can read") from None
    except _DECODE_ERRORS as err:
        raise BadImageError(f"cannot read the header of image {uri}: {err}") from None
    _check_pixels((width, height), uri, max_pixels)
    return width, height


def _check_pixels(size_wh: tuple[int, int], uri: str, max_pixels: int) -> None:
    width, height = size_wh
    if width * height > max_pixels:
        raise BadImageError(
            f"image {uri} is {width}x{height} = {width * height} pixels, above "
            f"data.max_image_pixels={max_pixels}"
        )


def _check_size(size_wh: tuple[int, int], expected_wh: tuple[int, int], uri: str) -> None:
    if 0 in expected_wh or tuple(size_wh) == tuple(expected_wh):
        return
    raise BadImageError(
        f"image {uri} is {size_wh[0]}x{size_wh[1]} but the annotations say "
        f"{expected_wh[0]}x{expected_wh[1]} (width x height, after EXIF orientation)"
    )


def to_rgb8(image: Image.Image) -> np.ndarray:
    """RGB uint8 HWC array of a decoded image of any mode.

    The rule, by PIL mode:

    - 16-bit grayscale (``I;16``, ``I;16B``, ...): the high byte (``value >> 8``), so 16-bit
      mid-gray 32896 is 8-bit 128. (16-bit RGB/RGBA PNGs open as ``RGB``/``RGBA`` with PIL
      already keeping the high byte.)
    - ``I`` (32-bit int): values within 0..65535 are taken as 16-bit (``>> 8``), as PIL opens
      some 16-bit files as ``I``; any other range is mapped linearly from [min, max] to [0, 255].
    - ``F`` (32-bit float): values within [0, 1] are scaled by 255; any other range is mapped
      linearly from [min, max] to [0, 255]; NaN is 0.
    - Gray, repeated to three channels. Alpha (``LA``, ``RGBA``, ``PA``, palette transparency)
      is dropped, keeping the stored colors; palettes are looked up; ``CMYK``, ``YCbCr``, ``1``
      and the rest go through PIL's ``convert("RGB")``.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray = _gray_to_uint8(np.asarray(image), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(image)  # convert("RGB") would copy every pixel once more for nothing
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns on P -> RGB with transparency
    return np.asarray(image.convert("RGB"))


def _gray_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    if mode in SIXTEEN_BIT_MODES:
        return (array.astype(np.uint16) >> 8).astype(np.uint8)
    if mode == "F":
        array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            return np.round(array * 255.0).astype(np.uint8)
    else:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 0xFFFF:
            return (array.astype(np.uint32) >> 8).astype(np.uint8)
    span = max(high - low, 1e-12)
    return np.round((array.astype(np.float64) - low) * (255.0 / span)).astype(np.uint8)


def is_flipped(aug_seed: int, policy: str) -> bool:
    """Whether the seeded augmentation mirrors the image: the one draw that images, stored teacher
    features and ground-truth targets all replay."""
    if policy in ("none", "yolov8"):  # yolov8: a plain view 0; the other views are stored records
        return False
    if policy == "hflip":
        return bool(np.random.default_rng(aug_seed).random() < 0.5)
    raise ValueError(f"unknown augmentation policy {policy!r}; valid: none, hflip, yolov8")


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
