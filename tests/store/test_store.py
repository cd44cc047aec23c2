"""Feature-store round trip, atomic parts and shape checks, without Ray."""

import gc

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import teacher_output_batch
from vfmkd_ray.store.manifest import read_manifest, write_manifest
from vfmkd_ray.store.parts import (
    PART_GLOB,
    PartWriter,
    duplicate_ids,
    list_parts,
    read_column,
    read_row_groups,
    stored_image_ids,
)
from vfmkd_ray.store.reader import FeatureStoreError, decode_features
from vfmkd_ray.store.schema import SCHEMA_VERSION, crc_column, dtype_column, feature_column, shape_column


def _batch(ids, rng, shape=(8, 4, 4)):
    return teacher_output_batch(ids, "embed", rng.standard_normal((len(ids), *shape)).astype(np.float32))


def _read_rows(part: str, *extra: str) -> dict[str, np.ndarray]:
    names = ("image_id", feature_column("embed"), shape_column("embed"), dtype_column("embed"), *extra)
    return {name: np.array(read_column(part, name), dtype=object) for name in names}


def test_features_read_back_equal_the_written_fp16_values(tmp_path, make_manifest):
    rng = np.random.default_rng(0)
    batch = _batch(["a", "b", "c"], rng)
    dataset = str(tmp_path / "sam_vit_b" / "64")
    PartWriter(dataset, ["embed"], "fp16")(dict(batch))
    parts = list_parts(dataset)
    assert len(parts) == 1 and not list((tmp_path / "sam_vit_b" / "64").glob("*.tmp*"))
    rows = {
        name: np.array(read_column(parts[0], name), dtype=object)
        for name in (
            "image_id",
            "image_uri",
            "aug_seed",
            feature_column("embed"),
            shape_column("embed"),
            "feat.embed.dtype",
            crc_column("embed"),
        )
    }
    manifest = make_manifest("embed", (8, 4, 4), 3).model_copy(update={"schema_version": SCHEMA_VERSION})
    decoded = decode_features(rows, manifest, dataset)[feature_column("embed")]
    assert decoded.dtype == np.float16
    np.testing.assert_array_equal(decoded, batch[feature_column("embed")].astype(np.float16))
    assert list(rows["image_uri"]) == list(batch["image_uri"])


def test_rewriting_the_same_ids_replaces_the_part(tmp_path):
    rng = np.random.default_rng(0)
    dataset = str(tmp_path / "store")
    writer = PartWriter(dataset, ["embed"], "fp16")
    writer(_batch(["a", "b"], rng))
    writer(_batch(["b", "a"], rng))  # a retried task writes the same part name
    writer(_batch(["c"], rng))
    assert len(list_parts(dataset)) == 2
    assert sorted(stored_image_ids(dataset)) == ["a", "b", "c"]
    assert duplicate_ids(["a", "b", "a"]) == ["a"]
    assert PART_GLOB == "part-*.parquet"


def test_a_part_keeps_min_max_statistics_for_its_keys_only(tmp_path):
    """Every read parses the footer: an int8 row's scale blob had 2 KB of min/max in it."""
    dataset = str(tmp_path / "store")
    PartWriter(dataset, ["embed"], "int8")(_batch(["a", "b"], np.random.default_rng(0)))
    meta = pq.ParquetFile(list_parts(dataset)[0]).metadata
    for group in range(meta.num_row_groups):
        chunks = [meta.row_group(group).column(c) for c in range(meta.num_columns)]
        with_stats = {chunk.path_in_schema for chunk in chunks if chunk.statistics is not None}
        assert with_stats == {"image_id", "view"}


def test_part_read_through_its_memory_map_outlives_the_map(tmp_path):
    """A local part is read through a memory map (``storage.open_random_access``); the table it
    gives must not point into the map once that is closed."""
    rng = np.random.default_rng(0)
    batch = _batch(["a", "b"], rng)
    dataset = str(tmp_path / "store")
    PartWriter(dataset, ["embed"], "fp16")(dict(batch))
    table, _ = read_row_groups(list_parts(dataset)[0], [0, 1])
    gc.collect()
    stored = np.stack(
        [np.frombuffer(b, np.float16) for b in table.column(feature_column("embed")).to_pylist()]
    )
    np.testing.assert_array_equal(stored, batch[feature_column("embed")].astype(np.float16).reshape(2, -1))


def test_row_with_wrong_shape_names_the_image_and_store(tmp_path, make_manifest):
    rng = np.random.default_rng(0)
    dataset = str(tmp_path / "store")
    PartWriter(dataset, ["embed"], "fp16")(_batch(["img-7"], rng, shape=(8, 2, 2)))
    part = list_parts(dataset)[0]
    rows = {
        name: np.array(read_column(part, name), dtype=object)
        for name in ("image_id", feature_column("embed"), shape_column("embed"), "feat.embed.dtype")
    }
    with pytest.raises(FeatureStoreError) as err:
        decode_features(rows, make_manifest("embed", (8, 4, 4), 1), dataset)
    assert "img-7" in str(err.value) and dataset in str(err.value) and "(8, 2, 2)" in str(err.value)


def test_manifest_round_trip_and_mismatch_report(tmp_path, make_manifest):
    dataset = str(tmp_path / "store")
    assert read_manifest(dataset) is None
    write_manifest(dataset, make_manifest("embed", (8, 4, 4), 3))
    manifest = read_manifest(dataset)
    assert manifest == make_manifest("embed", (8, 4, 4), 3)
    problems = manifest.describe_mismatch({"teacher": "dinov2_vits14", "input_size": 64})
    assert problems == ["teacher: store has 'sam_vit_b', run asks for 'dinov2_vits14'"]
    (tmp_path / "store" / "_manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt feature-store manifest"):
        read_manifest(dataset)
