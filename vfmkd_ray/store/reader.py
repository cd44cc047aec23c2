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
    """Per manifest layer: ``feat.L`` as stacked ``B x C x H x W`` stored arrays (fp16, bf16 bits or
    int8) and, for int8, ``feat.L.scale`` as ``B x C`` float32. ``codecs.to_float32`` finishes the
    decoding on the training device."""
    expected_dtype = codecs.CODEC_DTYPES[manifest.codec]
    decoded = {}
    for layer, spec in manifest.layers.items():
        column = feature_column(layer)
        if column not in batch:
            raise FeatureStoreError(f"store {dataset} has no column {column!r} for layer {layer}")
        arrays, scales = [], []
        for row, data in enumerate(batch[column]):
            image_id = batch["image_id"][row]
            shape = tuple(int(v) for v in batch[shape_column(layer)][row])
            dtype = str(batch[dtype_column(layer)][row])
            if shape != spec.shape or dtype != expected_dtype:
                raise FeatureStoreError(
                    f"feature row for image {image_id} layer {layer} in store {dataset} has shape "
                    f"{shape} dtype {dtype}; the manifest says {spec.shape} {expected_dtype}"
                )
            try:
                arrays.append(codecs.stored_array(data, shape, manifest.codec))
                if manifest.codec == "int8":
                    scales.append(_scale(batch[scale_column(layer)][row], shape[0]))
            except ValueError as err:
                raise FeatureStoreError(
                    f"feature row for image {image_id} layer {layer} in store {dataset} is corrupt: {err}"
                ) from None
        decoded[column] = np.stack(arrays)
        if scales:
            decoded[scale_column(layer)] = np.stack(scales)
    return decoded


def _scale(data: bytes, channels: int) -> np.ndarray:
    scale = np.frombuffer(data, dtype=np.float32)
    if scale.shape != (channels,):
        raise ValueError(f"int8 scale has {scale.size} values for {channels} channels")
    return scale
