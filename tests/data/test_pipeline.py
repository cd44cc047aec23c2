"""The Ray Data stages on in-memory batches: split, image fetch and feature decode."""

import numpy as np
import pytest

from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import (
    SAMPLE_KEY_COLUMN,
    STORED_BYTES_COLUMN,
    SampleSpec,
    TrainSampleDecoder,
    sample_key,
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


def test_the_decoder_turns_every_row_into_a_sample_with_its_key_and_bytes(tiny_config, make_manifest):
    rows, manifest, batch = _store_batch(tiny_config, make_manifest)
    rows[STORED_BYTES_COLUMN] = np.arange(len(rows["image_id"])) + 100
    (out,) = TrainSampleDecoder(StoreDataset("sam", "store", manifest), SPEC)(dict(rows))
    assert out[IMAGE_COLUMN].dtype == np.uint8 and out[IMAGE_COLUMN].shape[1:] == (3, 64, 64)
    assert out[VALID_HW_COLUMN].shape[1] == 2 and out[VALID_HW_COLUMN].max() <= 64
    expected = batch[feature_column("image_embed")].astype(np.float16)
    np.testing.assert_array_equal(out[teacher_column("sam", feature_column("image_embed"))], expected)
    assert out[SAMPLE_KEY_COLUMN].tolist() == [sample_key(str(i)) for i in batch["image_id"]]
    assert out[STORED_BYTES_COLUMN].tolist() == rows[STORED_BYTES_COLUMN].tolist()


class _TrainedAlready:
    """A data position holding some keys (``training.data_position`` answers the same question)."""

    def __init__(self, keys):
        self.keys = set(keys)

    def trained(self, keys):
        return frozenset(k for k in keys if k in self.keys)


def test_rows_an_interrupted_epoch_trained_on_are_dropped(tiny_config, make_manifest):
    rows, manifest, batch = _store_batch(tiny_config, make_manifest)
    ids = [str(i) for i in batch["image_id"]]
    position = _TrainedAlready(sample_key(i) for i in ids[::2])
    decoder = TrainSampleDecoder(StoreDataset("sam", "store", manifest), SPEC, position=position)
    (out,) = decoder(dict(rows))
    assert out[SAMPLE_KEY_COLUMN].tolist() == [sample_key(i) for i in ids[1::2]]
    everything = _TrainedAlready(sample_key(i) for i in ids)
    assert (
        list(TrainSampleDecoder(StoreDataset("sam", "store", manifest), SPEC, position=everything)(rows))
        == []
    )


def test_missing_image_of_a_stored_row_is_named(tiny_config, make_manifest):
    rows, manifest, _ = _store_batch(tiny_config, make_manifest)
    rows["image_uri"] = np.array(
        [uri.replace(".png", "-gone.png") for uri in rows["image_uri"]], dtype=object
    )
    with pytest.raises(BadImageError, match="image not found: .*-gone.png"):
        list(TrainSampleDecoder(StoreDataset("sam", "store", manifest), SPEC)(rows))
