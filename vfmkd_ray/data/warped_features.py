"""A training sample's stored teacher features under augmentation (``under_augmentation: warp``).

Each layer of each source image's stored row (the sample's image and its mosaic partners, all rows
of the same block) is decoded to float, carried into the sample's canvas by
``augment.feature_warp`` and encoded back to the store's codec, so the stream's feature columns keep
the stored form the workers decode. Beside each layer travels ``covered.<layer>``: 1 where a stored
map covers the target cell, 0 where the loss must ignore it. Samples whose teachers run in the
worker are covered everywhere (``covered_everywhere``): the live teacher sees the whole canvas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vfmkd_ray.data.augment.feature_warp import StoredMap, record_sources, warp_stored_maps
from vfmkd_ray.data.augment.record import AugmentRecord
from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.data.images import is_flipped
from vfmkd_ray.store import codecs
from vfmkd_ray.store.manifest import Manifest
from vfmkd_ray.store.schema import feature_column, scale_column

COVERED_PREFIX = "covered."


def covered_column(layer: str) -> str:
    """The stream column saying which cells of ``layer``'s target a stored map covers."""
    return f"{COVERED_PREFIX}{layer}"


def is_covered_column(column: str) -> bool:
    return column.startswith(COVERED_PREFIX)


def float_map(row: Mapping[str, np.ndarray], layer: str, codec: str) -> np.ndarray:
    """One layer of a ``reader.decode_row`` result as a float32 ``C x h x w`` map."""
    import torch  # here: the decode stage's processes import torch only when a run warps

    array = row[feature_column(layer)]
    # Decoded rows are read-only views of the stored bytes; torch wants a writable array.
    stored = torch.from_numpy(array if array.flags.writeable else array.copy())[None]
    scale = row.get(scale_column(layer))
    scales = None if scale is None else torch.from_numpy(np.array(scale, np.float32))[None]
    return codecs.to_float32(stored, codec, scales)[0].numpy()


def stored_form(features_Chw: np.ndarray, layer: str, codec: str) -> dict[str, np.ndarray]:
    """A float map encoded as the store holds it: ``feat.L`` (and ``feat.L.scale`` for int8)."""
    data, scale = codecs.encode(features_Chw, codec)
    columns = {feature_column(layer): codecs.stored_array(data, features_Chw.shape, codec)}
    if codec == "int8":
        columns[scale_column(layer)] = scale
    return columns


def warped_row(
    record: AugmentRecord,
    rows: Mapping[str, Mapping[str, np.ndarray] | None],
    image_hw: Mapping[str, tuple[int, int]],
    mirrored: Mapping[str, bool],
    manifest: Manifest,
    float_maps: dict | None = None,
) -> dict[str, np.ndarray]:
    """The stored-form columns of ``record``'s sample, with a ``covered.<layer>`` column per
    layer. ``rows``: image id -> its decoded stored row (None or absent: that tile has no map);
    ``mirrored``: whether an image's row is of the mirrored image (``store.augment``);
    ``float_maps``: a cache of decoded maps by (image id, layer), kept across a block's samples."""
    cache = {} if float_maps is None else float_maps
    sources = record_sources(record)
    columns: dict[str, np.ndarray] = {}
    for layer, spec in manifest.layers.items():
        maps = []
        for image_id in sources:
            row = rows.get(image_id)
            if row is None:
                maps.append(None)
                continue
            if (image_id, layer) not in cache:
                cache[image_id, layer] = float_map(row, layer, manifest.codec)
            maps.append(StoredMap(cache[image_id, layer], image_hw[image_id], mirrored[image_id]))
        target, covered = warp_stored_maps(record, maps, spec.shape)  # type: ignore[arg-type]
        columns |= stored_form(target, layer, manifest.codec)
        columns[covered_column(layer)] = covered.astype(np.uint8)
    return columns


def covered_everywhere(manifest: Manifest) -> dict[str, np.ndarray]:
    """The ``covered.<layer>`` columns of a sample whose teacher runs on its whole canvas."""
    return {
        covered_column(layer): np.ones(spec.shape[1:], np.uint8) for layer, spec in manifest.layers.items()
    }


@dataclass(frozen=True)
class WarpSources:
    """One store's rows of a block, for the samples whose targets are warped from them."""

    alias: str
    manifest: Manifest
    rows: dict[str, dict[str, np.ndarray]]  # image id -> its row's columns, unprefixed
    mirrored: dict[str, bool]
    float_maps: dict  # (image id, layer) -> decoded map: each source decoded once per block


def warp_sources(stores, aug_seeds: Mapping[str, int], rows: Mapping[str, dict]) -> list[WarpSources]:
    """Per store (``StoreDataset``s), once per block: its rows by image id from ``rows`` (the
    block's decoded rows, every store's columns prefixed by alias), which are of the mirrored image
    (their ``aug_seed`` under the store's ``augment``), and an empty cache of float maps."""
    sources = []
    for store in stores:
        prefix = feature_key(store.alias, "")
        own = {
            image_id: {name[len(prefix) :]: v for name, v in row.items() if name.startswith(prefix)}
            for image_id, row in rows.items()
        }
        mirrored = {i: is_flipped(seed, store.manifest.augment) for i, seed in aug_seeds.items()}
        sources.append(WarpSources(store.alias, store.manifest, own, mirrored, {}))
    return sources


def warped_features(
    record: AugmentRecord, image_hw: Mapping[str, tuple[int, int]], sources: list[WarpSources]
) -> dict[str, np.ndarray]:
    """A sample's stream columns: every store's maps of its sources warped into its canvas, each
    column prefixed by its store's alias."""
    features: dict[str, np.ndarray] = {}
    for store in sources:
        columns = warped_row(record, store.rows, image_hw, store.mirrored, store.manifest, store.float_maps)
        features |= {feature_key(store.alias, name): value for name, value in columns.items()}
    return features
