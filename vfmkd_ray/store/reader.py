"""Decoding store rows into model-ready arrays, checked against the manifest.

A row whose feature shape or dtype disagrees with the manifest is an error naming the image and
the store, never a silently mis-shaped training target.
"""

from __future__ import annotations

import numpy as np

from vfmkd_ray.store import codecs
from vfmkd_ray.store.manifest import Manifest
from vfmkd_ray.store.schema import dtype_column, feature_column, scale_column, shape_column


class FeatureStoreError(ValueError):
    """A store row that does not match its manifest; the message names the image and store."""


def decode_features(batch: dict[str, np.ndarray], manifest: Manifest, dataset: str) -> dict[str, np.ndarray]:
    """Every row of ``batch`` through ``decode_row``, stacked into ``B x ...`` arrays."""
    rows = [decode_row(batch, row, manifest, dataset) for row in range(len(batch["image_id"]))]
    return {column: np.stack([r[column] for r in rows]) for column in rows[0]} if rows else {}


def decode_row(
    batch: dict[str, np.ndarray], row: int, manifest: Manifest, dataset: str
) -> dict[str, np.ndarray]:
    """One row's layers: ``feat.L`` as its stored array (fp16, bf16 bits or int8) and, for int8,
    ``feat.L.scale`` (C float32). ``codecs.to_float32`` finishes decoding on the training device.

    Raises:
        FeatureStoreError: a column is missing, or shape/dtype/scale disagree with the manifest.
    """
    expected_dtype = codecs.CODEC_DTYPES[manifest.codec]
    image_id = batch["image_id"][row]
    decoded = {}
    for layer, spec in manifest.layers.items():
        column = feature_column(layer)
        if column not in batch:
            raise FeatureStoreError(f"store {dataset} has no column {column!r} for layer {layer}")
        shape = tuple(int(v) for v in batch[shape_column(layer)][row])
        dtype = str(batch[dtype_column(layer)][row])
        if shape != spec.shape or dtype != expected_dtype:
            raise FeatureStoreError(
                f"feature row for image {image_id} layer {layer} in store {dataset} has shape "
                f"{shape} dtype {dtype}; the manifest says {spec.shape} {expected_dtype}"
            )
        try:
            decoded[column] = codecs.stored_array(batch[column][row], shape, manifest.codec)
            if manifest.codec == "int8":
                decoded[scale_column(layer)] = _scale(batch[scale_column(layer)][row], shape[0])
        except ValueError as err:
            raise FeatureStoreError(
                f"feature row for image {image_id} layer {layer} in store {dataset} is corrupt: {err}"
            ) from None
    return decoded


def _scale(data: bytes, channels: int) -> np.ndarray:
    scale = np.frombuffer(data, dtype=np.float32)
    if scale.shape != (channels,):
        raise ValueError(f"int8 scale has {scale.size} values for {channels} channels")
    return scale
