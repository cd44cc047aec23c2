"""The decode stage with data.augment.pipeline yolov8 (Ray-free): each block's rows become mosaic
samples whose partners are the block's other rows, the same every replay of an epoch, another the
next epoch; a bad image is recorded and is in no one's mosaic; validation is not augmented; under
``under_augmentation: warp`` each sample's stored maps are its sources' maps warped into its
canvas."""

import numpy as np
import pytest
import torch

from tests.conftest import Epoch
from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.config_checks import config_warnings
from vfmkd_ray.data.augment.block import BlockAugmentation
from vfmkd_ray.data.augment.feature_warp import record_sources
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import ImageAnnotations, read_dataset
from vfmkd_ray.data.pipeline import ANNOTATIONS_COLUMN, SampleSpec, TrainSampleDecoder, teacher_column
from vfmkd_ray.data.samples import read_image
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.data.targets import BOXES_COLUMN, LABELS_COLUMN
from vfmkd_ray.data.warped_features import covered_column, warped_row
from vfmkd_ray.store.manifest import StoreDataset
from vfmkd_ray.store.reader import decode_row
from vfmkd_ray.store.schema import build_table, feature_column
from vfmkd_ray.training.augmented_targets import refuse_stored_features_under_augmentation
from vfmkd_ray.training.batch_feed import BatchFeed


def _rows(tiny_config):
    write_synthetic_coco(tiny_config.data)
    dataset = read_dataset(tiny_config.data)
    records = dataset.records[:6]
    return {
        "image_id": np.array([r.image_id for r in records]),
        "image_uri": np.array([r.image_uri for r in records]),
        "aug_seed": np.zeros(len(records), np.int64),
        ANNOTATIONS_COLUMN: np.array([dataset.annotations[r.image_id].to_json() for r in records]),
    }


def _decode(rows, epoch: int, log=None):
    pipeline = BlockAugmentation.yolov8("n", 1, seed=0, epochs=3, size=64, max_objects=12)
    decoder = TrainSampleDecoder(None, SampleSpec(64, "none", 12, 0, pipeline), log, position=Epoch(epoch))
    [out] = list(decoder(rows))
    return out


def test_mosaic_samples_are_replayed_the_same_within_an_epoch_and_differ_across(tiny_config):
    rows = _rows(tiny_config)
    first, again, later = _decode(rows, 0), _decode(rows, 0), _decode(rows, 1)
    assert first["image"].shape == (6, 3, 64, 64) and (first["valid_hw"] == 64).all()
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(
        first[BOXES_COLUMN], again[BOXES_COLUMN]
    )
    assert not np.array_equal(first["image"], later["image"])
    boxes, labels = first[BOXES_COLUMN], first[LABELS_COLUMN]
    real = labels >= 0
    assert real.any() and ((boxes[real] >= 0) & (boxes[real] <= 64)).all()
    assert (boxes[real][:, 2:] > boxes[real][:, :2]).all()  # degenerate boxes were filtered
    # Mosaic epochs carry partners' boxes; the last epoch (close-mosaic: a letterbox with the
    # affine) at most each image's own.
    own = [len(ImageAnnotations.from_json(text).boxes) for text in rows[ANNOTATIONS_COLUMN]]
    count = lambda out: (out[LABELS_COLUMN] >= 0).sum(axis=1).tolist()  # noqa: E731
    assert any(n > mine for n, mine in zip(count(first), own, strict=True))
    closed = _decode(rows, 2)
    assert closed["image"].shape == (6, 3, 64, 64)
    assert all(n <= mine for n, mine in zip(count(closed), own, strict=True))


def test_a_bad_image_is_recorded_and_in_no_mosaic(tiny_config, tmp_path):
    rows = _rows(tiny_config)
    rows["image_uri"][2] = str(tmp_path / "gone.jpg")
    log = BadSampleLog(str(tmp_path / "bad"))
    out = _decode(rows, 0, log)
    assert len(out["image"]) == 5 and log.count() == 1
    with pytest.raises(Exception, match="gone.jpg"):
        _decode(rows, 0)  # without a skip policy it stops the run, naming the image


def test_mask_heads_are_refused_and_a_useless_close_mosaic_is_named(tiny_config):
    with pytest.raises(ConfigError, match="reads instance masks, which data.augment.pipeline yolov8"):
        load_config("configs/multitask.yaml", ["data.augment.pipeline=yolov8"])
    warned = config_warnings(load_config(None, ["data.augment.close_mosaic_epochs=3"]))
    assert "data.augment.close_mosaic_epochs has no effect: data.augment.pipeline is none" in warned
    warned = config_warnings(load_config(None, ["data.augment.pipeline=yolov8", "train.epochs=5"]))
    assert any("close_mosaic_epochs 10 >= train.epochs 5: no epoch uses mosaic" in w for w in warned)


def _warp_rows(tiny_config, make_manifest):
    """The block's rows with a stored fp16 map per image: a coordinate ramp and the image's index."""
    rows = _rows(tiny_config)
    count = len(rows["image_id"])
    ramp = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0)))
    maps = np.stack([np.concatenate([ramp, np.full((1, 8, 8), i)]) for i in range(count)]).astype(np.float32)
    table = build_table(
        {**rows, "valid_h": np.full(count, 64), "valid_w": np.full(count, 64), feature_column("embed"): maps},
        ["embed"],
        "fp16",
    )
    stored = {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}
    return {**rows, **{k: v for k, v in stored.items() if k not in rows}}, make_manifest(
        "embed", (3, 8, 8), count
    )


def _decode_warped(rows, manifest, online_ratio=0.0, epoch=0):
    pipeline = BlockAugmentation.yolov8("n", 1, seed=0, epochs=3, size=64, max_objects=12)
    spec = SampleSpec(64, "none", 12, 0, pipeline)
    decoder = TrainSampleDecoder(
        StoreDataset("sam", "store", manifest), spec, None, online_ratio, position=Epoch(epoch)
    )
    [out] = list(decoder(rows))
    return out, pipeline


@pytest.mark.parametrize("epoch", [0, 2])  # a mosaic epoch and a close-mosaic one
def test_warp_carries_each_samples_stored_maps_into_its_canvas(tiny_config, make_manifest, epoch):
    """Each sample's feature column is its record's sources' stored maps warped into its canvas,
    in the store's codec, with the coverage beside it; the other images' maps never leak in."""
    rows, manifest = _warp_rows(tiny_config, make_manifest)
    out, pipeline = _decode_warped(rows, manifest, epoch=epoch)
    ids = [str(i) for i in rows["image_id"]]
    records = pipeline.records(epoch, ids)
    stored = {i: decode_row(rows, n, manifest, "store") for n, i in enumerate(ids)}
    sizes = {i: read_image(str(rows["image_uri"][n])).shape[:2] for n, i in enumerate(ids)}
    features, covered = (
        out[teacher_column("sam", "feat.embed")],
        out[teacher_column("sam", covered_column("embed"))],
    )
    assert features.dtype == np.float16 and covered.shape == (len(ids), 8, 8)
    seen = []
    for n, record in enumerate(records):
        expected = warped_row(record, stored, sizes, dict.fromkeys(ids, False), manifest)
        np.testing.assert_array_equal(features[n], expected["feat.embed"])
        np.testing.assert_array_equal(covered[n], expected[covered_column("embed")])
        sources = {ids.index(i) for i in record_sources(record)}
        seen.append(set(np.unique(features[n][2][covered[n] == 1]).astype(int).tolist()))
        assert seen[-1] <= sources
    # Mosaics show their partners' maps; the close-mosaic epoch only each image's own.
    assert max(map(len, seen)) > 1 if epoch == 0 else all(s == {n} for n, s in enumerate(seen))
    # The worker's batch carries the coverage beside the decoded target, for every teacher term.
    feed = BatchFeed(frozenset({"sam/embed"}), {"sam": "fp16"}, torch.device("cpu"), len(ids), 1)
    batch = feed.to_batch({name: torch.from_numpy(np.asarray(column)) for name, column in out.items()})
    assert torch.equal(batch.teacher_coverage["sam/embed"], torch.from_numpy(covered).float()[:, None])


def test_under_warp_an_online_sample_is_covered_everywhere_for_its_live_teacher(tiny_config, make_manifest):
    rows, manifest = _warp_rows(tiny_config, make_manifest)
    out, _ = _decode_warped(rows, manifest, online_ratio=1.0)
    assert out["online"].all() and not out[teacher_column("sam", "feat.embed")].any()
    assert out[teacher_column("sam", covered_column("embed"))].all()


def test_a_stored_teacher_under_augmentation_must_say_how_its_target_follows(tiny_config):
    cfg = load_config("configs/demo.yaml", ["data.augment.pipeline=yolov8"])
    alias = cfg.primary_teacher
    with pytest.raises(ValueError, match=f"set teachers.{alias}.under_augmentation to warp"):
        refuse_stored_features_under_augmentation(cfg, [alias])
    refuse_stored_features_under_augmentation(
        load_config(
            "configs/demo.yaml", ["data.augment.pipeline=yolov8", f"teachers.{alias}.under_augmentation=warp"]
        ),
        [alias],
    )
    plain = load_config("configs/demo.yaml", [f"teachers.{alias}.under_augmentation=warp"])
    assert (
        f"teachers.{alias}.under_augmentation has no effect: data.augment.pipeline is none"
        in config_warnings(plain)
    )
