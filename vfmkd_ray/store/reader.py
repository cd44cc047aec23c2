"""Decoding store rows into model-ready arrays, checked against the manifest and their checksums.

A row whose feature shape or dtype disagrees with the manifest, whose bytes fail their
``feat.L.crc32`` (schema version 2), or that holds NaN/inf is an error naming the image, layer and
store, never a silently wrong training target. Rows of schema-1 stores have no checksum: they are
still read (and still rejected when non-finite), with one warning per store.
"""

from __future__ import annotations

import logging

import numpy as np

from vfmkd_ray.store import codecs
from vfmkd_ray.store.errors import FeatureStoreError
from vfmkd_ray.store.manifest import Manifest
from vfmkd_ray.store.schema import (
    FIRST_CHECKSUM_VERSION,
    crc_column,
    dtype_column,
    feature_column,
    row_checksum,
    scale_column,
    shape_column,
)

__all__ = ["FeatureStoreError", "decode_features", "decode_row"]

log = logging.getLogger(__name__)
_REBUILD = "delete the part holding it and re-run vfmkd precompute, which recomputes its rows"
_warned_stores: set[str] = set()  # schema-1 stores warned about, once per process


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
        FeatureStoreError: a column is missing, shape/dtype/scale disagree with the manifest, the
            bytes fail their checksum, or a value (int8: a scale) is NaN/inf.
    """
    expected_dtype = codecs.CODEC_DTYPES[manifest.codec]
    has_checksums = manifest.schema_version >= FIRST_CHECKSUM_VERSION
    if not has_checksums:
        _warn_once(dataset, manifest.schema_version)
    image_id = batch["image_id"][row]
    decoded = {}
    for layer, spec in manifest.layers.items():
        column = feature_column(layer)
        if column not in batch:
            raise FeatureStoreError(f"store {dataset} has no column {column!r} for layer {layer}")
        where = f"feature row for image {image_id} layer {layer} in store {dataset}"
        shape = tuple(int(v) for v in batch[shape_column(layer)][row])
        dtype = str(batch[dtype_column(layer)][row])
        if shape != spec.shape or dtype != expected_dtype:
            raise FeatureStoreError(
                f"{where} has shape {shape} dtype {dtype}; the manifest says {spec.shape} {expected_dtype}"
            )
        data = batch[column][row]
        if data is None:
            raise FeatureStoreError(f"{where} has no feature bytes (a null {column})")
        scale = (batch[scale_column(layer)][row] if scale_column(layer) in batch else None) or b""
        if has_checksums:
            _check_checksum(batch, row, layer, data, scale, where)
        try:
            decoded[column] = codecs.stored_array(data, shape, manifest.codec)
            if manifest.codec == "int8":
                decoded[scale_column(layer)] = _scale(scale, shape[0])
        except ValueError as err:
            raise FeatureStoreError(f"{where} is corrupt: {err}") from None
        num_bad = codecs.count_non_finite(decoded[column], manifest.codec, decoded.get(scale_column(layer)))
        if num_bad:
            what = "int8 scales" if manifest.codec == "int8" else "values"
            raise FeatureStoreError(
                f"{where} holds {num_bad} non-finite {what} (NaN/inf), which would make training NaN: "
                f"{_REBUILD}"
            )
    return decoded


def _check_checksum(batch: dict, row: int, layer: str, data: bytes, scale: bytes, where: str) -> None:
    column = crc_column(layer)
    try:  # a part without the column (or a null, NaN after Arrow's numpy conversion) has none
        stored = int(batch[column][row]) if column in batch else None
    except (TypeError, ValueError):
        stored = None
    if stored is None:
        raise FeatureStoreError(
            f"{where} has no {column} checksum, though its manifest's schema version has them"
        )
    computed = row_checksum(data, scale)
    if stored != computed:
        raise FeatureStoreError(
            f"{where} fails its checksum (stored crc32 0x{stored:08x}, computed 0x{computed:08x}): "
            f"the part is corrupt; {_REBUILD}"
        )


def _warn_once(dataset: str, schema_version: int) -> None:
    if dataset not in _warned_stores:
        _warned_stores.add(dataset)
        log.warning(
            "store %s has schema version %d, which predates row checksums: corrupt feature bytes "
            "cannot be detected (NaN/inf still are); re-run vfmkd precompute into a fresh store.root "
            "to get them",
            dataset,
            schema_version,
        )


def _scale(data: bytes, channels: int) -> np.ndarray:
    scale = np.frombuffer(data, dtype=np.float32)
    if scale.shape != (channels,):
        raise ValueError(f"int8 scale has {scale.size} values for {channels} channels")
    return scale
