"""Ray Data stages: fetch + decode images by URI, and turn store rows into training samples.

These are plain callables for ``Dataset.map_batches``; they import nothing from Ray, so they are
testable on in-memory batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from vfmkd_ray import storage
from vfmkd_ray.data.bad_samples import BadSample, BadSampleLog
from vfmkd_ray.data.images import BadImageError, augment, decode_image, letterbox
from vfmkd_ray.store import codecs
from vfmkd_ray.store.manifest import Manifest
from vfmkd_ray.store.reader import FeatureStoreError, decode_row
from vfmkd_ray.store.schema import feature_column, scale_column

IMAGE_COLUMN = "image"
VALID_HW_COLUMN = "valid_hw"
ONLINE_COLUMN = "online"  # 1 where the worker runs the teacher instead of using stored features


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
    """``image_uri`` + ``aug_seed`` -> letterboxed uint8 ``image`` and its ``valid_h``/``valid_w``.

    A generator over batches: with a ``bad_samples`` log, unreadable images are recorded and
    dropped (a batch with none left yields nothing); without one they raise, naming the URI.
    """

    def __init__(self, input_size: int, policy: str, bad_samples: BadSampleLog | None = None):
        self.input_size, self.policy, self.bad_samples = input_size, policy, bad_samples

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        keep, images, heights, widths = [], [], [], []
        for row, (uri, seed) in enumerate(zip(batch["image_uri"], batch["aug_seed"], strict=True)):
            try:
                canvas, (height, width) = load_letterboxed(str(uri), self.input_size, int(seed), self.policy)
            except BadImageError as err:
                if self.bad_samples is None:
                    raise
                self.bad_samples.record(
                    BadSample(str(batch["image_id"][row]), str(uri), "precompute", str(err))
                )
                continue
            keep.append(row)
            images.append(canvas)
            heights.append(height)
            widths.append(width)
        if keep:
            yield {
                **{name: np.asarray(column)[keep] for name, column in batch.items()},
                IMAGE_COLUMN: np.stack(images),
                "valid_h": np.array(heights, dtype=np.int32),
                "valid_w": np.array(widths, dtype=np.int32),
            }


class TrainSampleDecoder:
    """Store rows of one split -> ``image`` (uint8), ``valid_hw`` and ``feat.L`` (stored form).

    Rows of the other split are dropped here, so the split needs no shuffle or join. With a
    ``bad_samples`` log, a row whose image or features cannot be used is recorded and skipped;
    without one it raises, naming the image and URI.
    """

    def __init__(
        self,
        manifest: Manifest,
        dataset: str,
        split: str,
        val_fraction: float,
        bad_samples: BadSampleLog | None = None,
        online_ratio: float = 0.0,
    ):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.manifest, self.dataset = manifest, dataset
        self.want_val, self.val_fraction = split == "val", val_fraction
        self.bad_samples = bad_samples
        self.online_ratio = online_ratio

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        # A generator, so a batch with no usable row yields nothing: zero-row tensor columns would
        # make Ray Data fall back to pickling the whole column.
        # Seeded from fresh OS entropy per call: a generator made in __init__ would be pickled into
        # every task with the same state and draw the same "random" samples every epoch.
        rng = np.random.default_rng()
        samples = []
        for row, image_id in enumerate(batch["image_id"]):
            if is_validation(str(image_id), self.val_fraction) != self.want_val:
                continue
            try:
                samples.append(self._sample(batch, row, rng))
            except (BadImageError, FeatureStoreError) as err:
                if self.bad_samples is None:
                    raise
                uri = str(batch["image_uri"][row])
                self.bad_samples.record(BadSample(str(image_id), uri, "train", str(err)))
        if samples:
            yield {column: np.stack([s[column] for s in samples]) for column in samples[0]}

    def _sample(
        self, batch: dict[str, np.ndarray], row: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        has_row = len(batch[feature_column(next(iter(self.manifest.layers)))][row]) > 0
        online = not has_row or rng.random() < self.online_ratio
        if online:
            features = placeholder_features(self.manifest)  # the worker's teacher fills these in
        else:
            features = decode_row(batch, row, self.manifest, self.dataset)
        canvas, (height, width) = load_letterboxed(
            str(batch["image_uri"][row]),
            self.manifest.input_size,
            int(batch["aug_seed"][row]),
            self.manifest.augment,
        )
        return {
            IMAGE_COLUMN: canvas,
            VALID_HW_COLUMN: np.array([height, width], np.int32),
            ONLINE_COLUMN: np.uint8(online),
            **features,
        }


def placeholder_features(manifest: Manifest) -> dict[str, np.ndarray]:
    """Zero arrays in stored form for a sample whose features the worker computes online."""
    dtype = codecs.stored_dtype(manifest.codec)
    arrays = {}
    for layer, spec in manifest.layers.items():
        arrays[feature_column(layer)] = np.zeros(spec.shape, dtype)
        if manifest.codec == "int8":
            arrays[scale_column(layer)] = np.ones(spec.shape[0], np.float32)
    return arrays
