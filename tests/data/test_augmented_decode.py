"""The decode stage with data.augment.pipeline yolov8 (Ray-free): each block's rows become mosaic
samples whose partners are the block's other rows, the same every replay of an epoch, another the
next epoch; a bad image is recorded and is in no one's mosaic; validation is not augmented."""

import numpy as np
import pytest

from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.config_checks import config_warnings
from vfmkd_ray.data.augment.block import BlockAugmentation
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import ImageAnnotations, read_dataset
from vfmkd_ray.data.pipeline import ANNOTATIONS_COLUMN, SampleSpec, TrainSampleDecoder
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.data.targets import BOXES_COLUMN, LABELS_COLUMN


class Epoch:
    """The data position's answer to "which epoch": what a pass's decode tasks replay."""

    def __init__(self, epoch: int):
        self.value = epoch

    def epoch(self):
        return self.value

    def trained(self, keys):
        return frozenset()


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
