"""The Parquet row layout of the feature store (DESIGN section 4), version ``SCHEMA_VERSION``.

Per image and view: ``image_id``, ``image_uri``, ``view`` (int16: which of the image's
``store.views_per_image`` augmented views the row holds), ``aug_seed``, the unpadded
``valid_h``/``valid_w`` after letterboxing, and per teacher layer ``L`` five plain columns:
``feat.L`` (binary), ``feat.L.shape`` (list<int32>), ``feat.L.dtype`` (string),
``feat.L.scale`` (float32 bytes: the per-channel scales of the int8 codec, empty otherwise) and
``feat.L.crc32`` (int64 holding the unsigned 32-bit ``zlib.crc32`` of the ``feat.L`` bytes followed
by the ``feat.L.scale`` bytes). Plain binary rather than Arrow tensor extension types, so any
Parquet reader can consume the store.

A store of augmented views (``store.augment: yolov8``) adds two string columns,
``aug_record`` (the view's ``AugmentRecord`` JSON, "" for the plain view 0) and ``aug_sources``
(JSON: image id -> URI of each image on the view's canvas) (``data.views``).

Versions: 1 had no ``crc32`` columns (still readable: the reader skips the checksum but still
rejects non-finite values); 2 adds them; 3 adds ``view`` (parts of older versions hold view 0).
``build_table`` refuses non-finite teacher outputs, and outputs that the codec would turn into inf
(fp16 beyond 65504), so a store never holds NaN/inf.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
from zlib_ng import zlib_ng

from vfmkd_ray.data.views import VIEW_RECORD_COLUMN, VIEW_SOURCES_COLUMN
from vfmkd_ray.store import codecs
from vfmkd_ray.store.errors import FeatureStoreError

SCHEMA_VERSION = 3
FIRST_CHECKSUM_VERSION = 2  # stores of older versions have no ``feat.L.crc32`` columns
KEY_COLUMNS = ("image_id", "image_uri", "view", "aug_seed", "valid_h", "valid_w")


def feature_column(layer: str) -> str:
    return f"feat.{layer}"


def shape_column(layer: str) -> str:
    return f"feat.{layer}.shape"


def dtype_column(layer: str) -> str:
    return f"feat.{layer}.dtype"


def scale_column(layer: str) -> str:
    return f"feat.{layer}.scale"


def crc_column(layer: str) -> str:
    return f"feat.{layer}.crc32"


def row_checksum(data: bytes, scale: bytes) -> int:
    """The ``feat.L.crc32`` value: crc32 of the stored feature bytes, then the scale bytes.

    zlib-ng's crc32 is zlib's (the same values, so every store written before still checks) with
    its SIMD kernels: 13x less CPU than the ``zlib`` module on a 2 MB row (``benchmarks/data_plane``),
    where the checksum was the store read's largest stage."""
    return zlib_ng.crc32(scale, zlib_ng.crc32(data))


def aug_seed_for(image_id: str, seed: int, view: int = 0) -> int:
    """A stable augmentation seed per image and view, so the student can replay what the teacher
    saw (view 0's seed is the one stores had before views existed)."""
    key = f"{seed}:{image_id}" if view == 0 else f"{seed}:{image_id}:view{view}"
    digest = hashlib.sha1(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def build_table(batch: dict[str, np.ndarray], layers: list[str], codec: str) -> pa.Table:
    """A Parquet-ready table from a batch holding the key columns and float ``feat.L`` arrays.

    Raises:
        FeatureStoreError: a feature map holds NaN/inf, or values the codec cannot represent.
    """
    image_ids = [str(v) for v in batch["image_id"]]
    columns: dict[str, pa.Array] = {
        "image_id": pa.array(image_ids, pa.string()),
        "image_uri": pa.array([str(v) for v in batch["image_uri"]], pa.string()),
        "view": pa.array(np.asarray(batch.get("view", np.zeros(len(image_ids))), dtype=np.int16)),
        "aug_seed": pa.array(np.asarray(batch["aug_seed"], dtype=np.int64)),
        "valid_h": pa.array(np.asarray(batch["valid_h"], dtype=np.int32)),
        "valid_w": pa.array(np.asarray(batch["valid_w"], dtype=np.int32)),
    }
    for column in (VIEW_RECORD_COLUMN, VIEW_SOURCES_COLUMN):
        if column in batch:
            columns[column] = pa.array([str(v) for v in batch[column]], pa.string())
    for layer in layers:
        features = batch[feature_column(layer)]
        encoded = [_encode_finite(f, codec, i, layer) for f, i in zip(features, image_ids, strict=True)]
        data = [d for d, _ in encoded]
        scales = [s.tobytes() for _, s in encoded]
        columns[feature_column(layer)] = pa.array(data, pa.binary())
        columns[scale_column(layer)] = pa.array(scales, pa.binary())
        columns[shape_column(layer)] = pa.array([list(f.shape) for f in features], pa.list_(pa.int32()))
        columns[dtype_column(layer)] = pa.array([codecs.CODEC_DTYPES[codec]] * len(features), pa.string())
        checksums = [row_checksum(d, s) for d, s in zip(data, scales, strict=True)]
        columns[crc_column(layer)] = pa.array(checksums, pa.int64())
    return pa.table(columns)


def _encode_finite(
    features_CHW: np.ndarray, codec: str, image_id: str, layer: str
) -> tuple[bytes, np.ndarray]:
    """``codecs.encode``, refusing what would store NaN/inf: training on it would be NaN."""
    features = np.asarray(features_CHW)
    if not np.isfinite(features).all():
        num_bad = int((~np.isfinite(features)).sum())
        raise FeatureStoreError(
            f"teacher output for image {image_id} layer {layer} holds {num_bad} non-finite values "
            "(NaN/inf): refusing to store it; check the teacher's weights and this image"
        )
    data, scale = codecs.encode(features, codec)
    num_bad = codecs.count_non_finite(codecs.stored_array(data, features.shape, codec), codec, scale)
    if num_bad:
        hint = ""
        if codec == "fp16":
            hint = f" (max {codecs.FP16_MAX:g}); store.codec bf16 or int8 keeps float32's range"
        raise FeatureStoreError(
            f"teacher output for image {image_id} layer {layer} has values up to "
            f"{float(np.abs(features).max()):.6g}, which exceeds the {codec} codec's range{hint}: "
            f"{num_bad} values would be stored as inf"
        )
    return data, scale


def refuse_extension_types(schema: pa.Schema, uri: str) -> None:
    """A store file this product writes holds plain Arrow types only. An extension type is refused
    before any value is read: Ray registers ``ray.data.arrow_pickled_object`` in every process that
    imports Ray Data, and reading such a column's values unpickles them, running whatever code a
    file put into shared storage holds.

    Raises:
        FeatureStoreError: naming the file and the column.
    """
    for field in schema:
        if _has_extension(field.type):
            name = getattr(field.type, "extension_name", None) or str(field.type)
            raise FeatureStoreError(
                f"{uri} has column {field.name!r} of an Arrow extension type ({name}); a store this "
                "product writes has none, and reading one may run code: not read"
            )


def _has_extension(dtype: pa.DataType) -> bool:
    if isinstance(dtype, pa.ExtensionType):
        return True
    if pa.types.is_dictionary(dtype):
        return _has_extension(dtype.value_type)
    return any(_has_extension(dtype.field(i).type) for i in range(dtype.num_fields))
