"""The Ray Data stages on in-memory batches: split, image fetch and feature decode."""

import numpy as np
import pytest

from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import (
    SampleSpec,
    TrainSampleDecoder,
    is_validation,
    teacher_column,
)
from vfmkd_ray.data.samples import IMAGE_COLUMN, VALID_HW_COLUMN
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.manifest import StoreDataset
from vfmkd_ray.store.schema import build_table, feature_column

SPEC = SampleSpec(input_size=64, augment="none")


def _store_batch(tiny_config, make_manifest):
    write_synthetic_coco(tiny_config.data)
    records = read_image_records(tiny_config.data)
    rng = np.random.default_rng(0)
    batch = {
        "image_id": np.array([r.image_id for r in records]),
        "image_uri": np.array([r.image_uri for r in records]),
        "aug_seed": np.arange(len(records)),
        "valid_h": np.full(len(records), 64),
        "valid_w": np.full(len(records), 64),
        feature_column("image_embed"): rng.standard_normal((len(records), 256, 4, 4)).astype(np.float32),
    }
    table = build_table(batch, ["image_embed"], "fp16")
    rows = {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}
    manifest = make_manifest("image_embed", (256, 4, 4), len(records))
    return rows, manifest, batch


def test_splits_partition_the_rows_and_decode_images_and_features(tiny_config, make_manifest):
    rows, manifest, batch = _store_batch(tiny_config, make_manifest)
    fraction = tiny_config.data.val_fraction
    outputs = {
        split: list(
            TrainSampleDecoder(StoreDataset("sam", "store", manifest), split, fraction, SPEC)(dict(rows))
        )
        for split in ("train", "val")
    }
    expected_val = [is_validation(i, fraction) for i in batch["image_id"]]
    counts = {split: sum(len(b[IMAGE_COLUMN]) for b in out) for split, out in outputs.items()}
    assert counts == {"train": expected_val.count(False), "val": expected_val.count(True)}
    train = outputs["train"][0]
    assert train[IMAGE_COLUMN].dtype == np.uint8 and train[IMAGE_COLUMN].shape[1:] == (3, 64, 64)
    assert train[VALID_HW_COLUMN].shape[1] == 2 and train[VALID_HW_COLUMN].max() <= 64
    keep = ~np.array(expected_val)
    expected = batch[feature_column("image_embed")][keep].astype(np.float16)
    np.testing.assert_array_equal(train[teacher_column("sam", feature_column("image_embed"))], expected)


def test_batch_without_rows_of_the_split_yields_nothing(tiny_config, make_manifest):
    rows, manifest, batch = _store_batch(tiny_config, make_manifest)
    only_train = np.array([not is_validation(i, 0.5) for i in batch["image_id"]])
    rows = {name: column[only_train] for name, column in rows.items()}
    assert list(TrainSampleDecoder(StoreDataset("sam", "store", manifest), "val", 0.5, SPEC)(rows)) == []


def test_missing_image_of_a_stored_row_is_named(tiny_config, make_manifest):
    rows, manifest, _ = _store_batch(tiny_config, make_manifest)
    rows["image_uri"] = np.array(
        [uri.replace(".png", "-gone.png") for uri in rows["image_uri"]], dtype=object
    )
    with pytest.raises(BadImageError, match="image not found: .*-gone.png"):
        list(TrainSampleDecoder(StoreDataset("sam", "store", manifest), "train", 0.0, SPEC)(rows))
