"""Decoding store rows into model-ready arrays, checked against the manifest.

A row whose feature shape or dtype disagrees with the manifest is an error naming the image and
the store, never a silently mis-shaped training target.
"""

from __future__ import annotations

import numpy as np

from vfmkd_ray.store import codecs
from vfmkd_ray.store.manifest import Manifest
from vfmkd_ray.store.schema import dtype_column, feature_column, shape_column


class FeatureStoreError(ValueError):
    """A store row that does not match its manifest; the message names the image and store."""


def decode_features(batch: dict[str, np.ndarray], manifest: Manifest, dataset: str) -> dict[str, np.ndarray]:
    """``feat.L`` -> stacked ``B x C x H x W`` arrays in the stored dtype, for every manifest layer."""
    expected_dtype = codecs.CODEC_DTYPES[manifest.codec]
    decoded = {}
    for layer, spec in manifest.layers.items():
        column = feature_column(layer)
        if column not in batch:
            raise FeatureStoreError(f"store {dataset} has no column {column!r} for layer {layer}")
        arrays = []
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
                arrays.append(codecs.decode(data, shape, manifest.codec))
            except ValueError as err:
                raise FeatureStoreError(
                    f"feature row for image {image_id} layer {layer} in store {dataset} is corrupt: {err}"
                ) from None
        decoded[column] = np.stack(arrays)
    return decoded
