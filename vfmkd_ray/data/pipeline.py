"""Ray Data stages: fetch + decode images by URI, and turn store rows into training samples.

These are plain callables for ``Dataset.map_batches``; they import nothing from Ray, so they are
testable on in-memory batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from vfmkd_ray import storage
from vfmkd_ray.data.images import BadImageError, augment, decode_image, letterbox
from vfmkd_ray.store.manifest import Manifest
from vfmkd_ray.store.reader import decode_features

IMAGE_COLUMN = "image"
VALID_HW_COLUMN = "valid_hw"


def load_letterboxed(
    image_uri: str, input_size: int, aug_seed: int, policy: str
) -> tuple[np.ndarray, tuple[int, int]]:
    """Reads, decodes, augments and letterboxes one image; errors name its URI."""
    try:
        data = storage.read_bytes(image_uri)
    except FileNotFoundError:
        raise BadImageError(f"image not found: {image_uri}") from None
    except OSError as err:
        raise BadImageError(f"cannot read image {image_uri}: {err}") from None
    return letterbox(augment(decode_image(data, image_uri), aug_seed, policy), input_size)


def is_validation(image_id: str, val_fraction: float) -> bool:
    """A stable split by hash of the id: the same image lands in the same split on every node."""
    bucket = int.from_bytes(hashlib.sha1(image_id.encode()).digest()[:4], "little") / 2**32
    return bucket < val_fraction


class ImageLoader:
    """``image_uri`` + ``aug_seed`` -> letterboxed uint8 ``image`` and its ``valid_h``/``valid_w``."""

    def __init__(self, input_size: int, policy: str):
        self.input_size, self.policy = input_size, policy

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, heights, widths = [], [], []
        for uri, seed in zip(batch["image_uri"], batch["aug_seed"], strict=True):
            canvas, (height, width) = load_letterboxed(str(uri), self.input_size, int(seed), self.policy)
            images.append(canvas)
            heights.append(height)
            widths.append(width)
        return {
            **batch,
            IMAGE_COLUMN: np.stack(images),
            "valid_h": np.array(heights, dtype=np.int32),
            "valid_w": np.array(widths, dtype=np.int32),
        }


class TrainSampleDecoder:
    """Store rows of one split -> ``image`` (uint8), ``valid_hw`` and ``feat.L`` (stored dtype).

    Rows of the other split are dropped here, so the split needs no shuffle or join.
    """

    def __init__(self, manifest: Manifest, dataset: str, split: str, val_fraction: float):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.manifest, self.dataset = manifest, dataset
        self.want_val, self.val_fraction = split == "val", val_fraction
        self.images = ImageLoader(manifest.input_size, manifest.augment)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        # A generator, so a batch with no row of this split yields nothing: zero-row tensor columns
        # would make Ray Data fall back to pickling the whole column.
        keep = np.array(
            [is_validation(str(i), self.val_fraction) == self.want_val for i in batch["image_id"]],
            dtype=bool,
        )
        if not keep.any():
            return
        batch = {name: column[keep] for name, column in batch.items()}
        features = decode_features(batch, self.manifest, self.dataset)
        loaded = self.images({"image_uri": batch["image_uri"], "aug_seed": batch["aug_seed"]})
        yield {
            IMAGE_COLUMN: loaded[IMAGE_COLUMN],
            VALID_HW_COLUMN: np.stack([loaded["valid_h"], loaded["valid_w"]], axis=1),
            **features,
        }
