"""The Parquet row layout of the feature store (DESIGN section 4), version ``SCHEMA_VERSION``.

Per image: ``image_id``, ``image_uri``, ``aug_seed``, the unpadded ``valid_h``/``valid_w`` after
letterboxing, and per teacher layer ``L`` four plain columns: ``feat.L`` (binary),
``feat.L.shape`` (list<int32>), ``feat.L.dtype`` (string) and ``feat.L.scale`` (float32 bytes: the
per-channel scales of the int8 codec, empty otherwise). Plain binary rather than Arrow tensor
extension types, so any Parquet reader can consume the store.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from vfmkd_ray.store import codecs

SCHEMA_VERSION = 1
KEY_COLUMNS = ("image_id", "image_uri", "aug_seed", "valid_h", "valid_w")


def feature_column(layer: str) -> str:
    return f"feat.{layer}"


def shape_column(layer: str) -> str:
    return f"feat.{layer}.shape"


def dtype_column(layer: str) -> str:
    return f"feat.{layer}.dtype"


def scale_column(layer: str) -> str:
    return f"feat.{layer}.scale"


def aug_seed_for(image_id: str, seed: int) -> int:
    """A stable per-image augmentation seed, so the student can replay what the teacher saw."""
    digest = hashlib.sha1(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def build_table(batch: dict[str, np.ndarray], layers: list[str], codec: str) -> pa.Table:
    """A Parquet-ready table from a batch holding the key columns and float ``feat.L`` arrays."""
    columns: dict[str, pa.Array] = {
        "image_id": pa.array([str(v) for v in batch["image_id"]], pa.string()),
        "image_uri": pa.array([str(v) for v in batch["image_uri"]], pa.string()),
        "aug_seed": pa.array(np.asarray(batch["aug_seed"], dtype=np.int64)),
        "valid_h": pa.array(np.asarray(batch["valid_h"], dtype=np.int32)),
        "valid_w": pa.array(np.asarray(batch["valid_w"], dtype=np.int32)),
    }
    for layer in layers:
        features = batch[feature_column(layer)]
        encoded = [codecs.encode(f, codec) for f in features]
        columns[feature_column(layer)] = pa.array([data for data, _ in encoded], pa.binary())
        columns[scale_column(layer)] = pa.array([scale.tobytes() for _, scale in encoded], pa.binary())
        columns[shape_column(layer)] = pa.array([list(f.shape) for f in features], pa.list_(pa.int32()))
        columns[dtype_column(layer)] = pa.array([codecs.CODEC_DTYPES[codec]] * len(features), pa.string())
    return pa.table(columns)
