"""One training or evaluation sample from an image URI and its annotations: the letterboxed uint8
image, its unpadded size and the ground truth the heads need, all under the same seeded
augmentation the teacher's stored features were computed with."""

from __future__ import annotations

import numpy as np

from vfmkd_ray import storage
from vfmkd_ray.data.coco import ImageAnnotations
from vfmkd_ray.data.config import DEFAULT_MAX_IMAGE_PIXELS
from vfmkd_ray.data.images import BadImageError, decode_image, is_flipped, letterbox

IMAGE_COLUMN = "image"
VALID_HW_COLUMN = "valid_hw"


def read_image(
    image_uri: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, expected_wh: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Reads and decodes one image (RGB uint8 HWC, as displayed); errors name its URI.

    ``max_pixels`` and ``expected_wh`` (the annotated width and height, 0 for unknown) are
    checked by ``images.decode_image``.
    """
    try:
        data = storage.read_bytes(image_uri)
    except FileNotFoundError:
        raise BadImageError(f"image not found: {image_uri}") from None
    except OSError as err:
        raise BadImageError(f"cannot read image {image_uri}: {err}") from None
    return decode_image(data, image_uri, max_pixels, expected_wh)


def load_letterboxed(
    image_uri: str,
    input_size: int,
    aug_seed: int,
    policy: str,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    expected_wh: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, tuple[int, int]]:
    """Reads, decodes, augments and letterboxes one image; errors name its URI."""
    image = read_image(image_uri, max_pixels, expected_wh)
    if is_flipped(aug_seed, policy):
        image = image[:, ::-1]
    return letterbox(image, input_size)


def load_sample(
    image_uri: str,
    annotations: ImageAnnotations | None,
    input_size: int,
    aug_seed: int,
    policy: str,
    max_objects: int = 0,
    max_masks: int = 0,
    mask_seed: int | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    expected_wh: tuple[int, int] = (0, 0),
) -> dict[str, np.ndarray]:
    """``image`` (3 x S x S uint8), ``valid_hw`` and, when ``max_objects``, the target columns of
    ``data.targets``; ``mask_seed`` picks the instances when an image has more than ``max_masks``
    (default: ``aug_seed``, the same every time). ``max_pixels`` and ``expected_wh`` as in
    ``read_image``."""
    from vfmkd_ray.data.targets import letterboxed_targets

    image = read_image(image_uri, max_pixels, expected_wh)
    flipped = is_flipped(aug_seed, policy)
    canvas, valid_hw = letterbox(image[:, ::-1] if flipped else image, input_size)
    sample = {IMAGE_COLUMN: canvas, VALID_HW_COLUMN: np.array(valid_hw, np.int32)}
    if max_objects:
        sample |= letterboxed_targets(
            annotations or ImageAnnotations(),
            image.shape[:2],
            valid_hw,
            input_size,
            flipped,
            max_objects,
            max_masks,
            aug_seed if mask_seed is None else mask_seed,
        )
    return sample
