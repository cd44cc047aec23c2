"""Annotations checked where they enter: a bad one stops the read with one line naming the file,
image and annotation, or under ``on_bad_sample: skip`` leaves its image out and records it; boxes are
clipped to the image and degenerate ones dropped and counted; a mask that still cannot be decoded
in a worker is a named error the decode stage treats as a bad sample; a head whose targets the
dataset lacks is warned about."""

import json
import logging
import math

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.conftest import tiny_overrides
from vfmkd_ray.config import load_config
from vfmkd_ray.data.annotation_checks import BadAnnotationError
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import ImageAnnotations, read_dataset
from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.data.pipeline import ANNOTATIONS_COLUMN, SampleSpec, TrainSampleDecoder
from vfmkd_ray.data.samples import IMAGE_COLUMN
from vfmkd_ray.data.targets import letterboxed_targets

CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
WIDTH, HEIGHT = 8, 6


def _write(tmp_path, annotations: list[dict], policy: str = "error", categories=CATEGORIES) -> DataConfig:
    """Two 8 x 6 PNGs (ids 1 and 2) and a COCO file holding ``annotations``."""
    (tmp_path / "images").mkdir(exist_ok=True)
    images = []
    for image_id in (1, 2):
        Image.new("RGB", (WIDTH, HEIGHT), (40 * image_id, 0, 0)).save(tmp_path / "images" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": WIDTH, "height": HEIGHT})
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return DataConfig(root=str(tmp_path), on_bad_sample=policy)


def _ann(
    ann_id: int, image_id: int = 1, bbox=(1, 1, 4, 3), category_id=1, segmentation=None, crowd=0
) -> dict:
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": list(bbox),
        "iscrowd": crowd,
    }
    if segmentation is not None:
        ann["segmentation"] = segmentation
    return ann


def _rle(height: int, width: int) -> dict:
    mask = np.zeros((height, width), np.uint8)
    mask[1:3, 1:3] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


BAD = {
    "rle-size": (
        _ann(7, segmentation=_rle(4, 4)),
        r"RLE size \[4, 4\] is not the image's \[height, width\] \[6, 8\]",
    ),
    "two-point-polygon": (
        _ann(7, segmentation=[[1, 1, 5, 4]]),
        "segmentation polygon 0 has 4 coordinates: a polygon is 3 or more x, y points",
    ),
    "odd-polygon": (
        _ann(7, segmentation=[[1, 1, 5, 4, 3, 3, 2]]),
        "segmentation polygon 0 has 7 coordinates",
    ),
    "flat-polygon": (
        _ann(7, segmentation=[1, 1, 5, 4, 3, 3]),
        "segmentation polygon 0 is 1, not a list of coordinates",
    ),
    "nan-polygon": (
        _ann(7, segmentation=[[1, 1, 5, 4, math.nan, 3]]),
        "segmentation polygon 0 has a coordinate that is not finite",
    ),
    "huge-int-polygon": (  # valid JSON: a 400-digit integer, beyond any float
        _ann(7, segmentation=[[1, 1, 5, 4, 10**400, 3]]),
        "segmentation polygon 0 has a coordinate that is not finite",
    ),
    "text-polygon": (
        _ann(7, segmentation=[[1, 1, 5, "4", 3, 3]]),
        "segmentation polygon 0 has a coordinate that is not a number",
    ),
    "segmentation-object": (
        _ann(7, segmentation={"counts": "abc"}),
        "RLE size None is not \\[height, width\\]",
    ),
    "rle-counts": (
        _ann(7, segmentation={"size": [6, 8], "counts": [10, 5]}),
        "RLE counts cover 15 pixels, not the image's 6x8 = 48",
    ),
    "unknown-category": (_ann(7, category_id=99), r"category_id 99 is not in categories \(valid ids: 1-3\)"),
    "bbox-shape": (_ann(7, bbox=(1, 1, 4)), r"bbox \[1, 1, 4\] is not \[x, y, width, height\]"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_annotation_stops_the_read_naming_file_image_and_annotation(tmp_path, kind):
    annotation, reason = BAD[kind]
    cfg = _write(tmp_path, [_ann(1, image_id=2), annotation])
    with pytest.raises(ValueError, match=rf"annotations.json: image 1, annotation 7: {reason}") as raised:
        read_dataset(cfg)
    assert "\n" not in str(raised.value) and "on_bad_sample=skip" in str(raised.value)


@pytest.mark.parametrize("kind", list(BAD))
def test_under_skip_the_image_of_a_bad_annotation_is_left_out_and_recorded(tmp_path, kind):
    annotation, _ = BAD[kind]
    cfg = _write(tmp_path, [_ann(1, image_id=2), _ann(6), annotation], policy="skip")
    dataset = read_dataset(cfg)
    assert [r.image_id for r in dataset.records] == ["2"] and set(dataset.annotations) == {"2"}
    [entry] = dataset.bad_samples
    assert (entry.image_id, entry.stage) == ("1", "annotations") and entry.image_uri.endswith("1.png")
    assert entry.error.startswith("bad annotations (1): annotation 7: ")
    log = BadSampleLog(str(tmp_path / "bad"))
    log.record(entry)
    assert log.count() == 1


def test_valid_category_ids_are_named_as_ranges_and_the_rest_counted(tmp_path):
    categories = [{"id": i, "name": str(i)} for i in (1, 2, 3, 5, 9, 10)]
    cfg = _write(
        tmp_path, [_ann(7, category_id=4), _ann(8, image_id=2, category_id="1")], categories=categories
    )
    with pytest.raises(
        ValueError,
        match=r"annotation 7: category_id 4 is not in categories \(valid ids: 1-3, 5, 9-10\) \(1 more bad",
    ):
        read_dataset(cfg)


def test_boxes_are_clipped_to_the_image(tmp_path):
    dataset = read_dataset(_write(tmp_path, [_ann(1, bbox=(-3, 2, 20, 10)), _ann(2, bbox=(6, -1, 1.5, 2))]))
    assert dataset.annotations["1"].boxes == [[0.0, 2.0, 8.0, 6.0], [6.0, 0.0, 7.5, 1.0]]
    assert dataset.num_dropped_boxes == 0 and dataset.bad_samples == []
    targets = letterboxed_targets(dataset.annotations["1"], (HEIGHT, WIDTH), (48, 64), 64, True, 4, 0, 0)
    np.testing.assert_allclose(targets["boxes"][0], [0.0, 16.0, 64.0, 48.0])  # mirrored, x8


def test_degenerate_boxes_are_dropped_and_counted_not_skipped(tmp_path, caplog):
    anns = [
        _ann(1, bbox=(1, 1, 4, 3), segmentation=[[1, 1, 5, 1, 5, 4]]),
        _ann(2, bbox=(1, 1, 0, 3)),
        _ann(3, bbox=(1, 1, 2, -3)),
        _ann(4, bbox=(1, 1, math.nan, 3)),
        _ann(5, image_id=2, bbox=(9, 1, 2, 2)),  # wholly right of the 8 px wide image
        _ann(6, image_id=2, bbox=(1, 1, 2, 2), segmentation=[[1, 1, 3, 1, 3, 3]]),
    ]
    caplog.set_level(logging.WARNING, logger="vfmkd_ray")
    dataset = read_dataset(_write(tmp_path, anns))
    assert [r.image_id for r in dataset.records] == ["1", "2"], "images with degenerate boxes are kept"
    assert dataset.num_dropped_boxes == 4
    assert dataset.annotations["1"].annotation_ids == ["1"] and dataset.annotations["2"].annotation_ids == [
        "6"
    ]
    assert dataset.annotations["1"].segmentations == [[[1, 1, 5, 1, 5, 4]]]
    notes = {s.image_id: s for s in dataset.bad_samples}
    assert {s.stage for s in notes.values()} == {"dropped-boxes"}
    assert notes["1"].error.startswith(
        "degenerate boxes dropped (3): annotation 2: bbox [1, 1, 0, 3] has width 0"
    )
    assert "annotation 4: bbox [1, 1, nan, 3] is not finite" in notes["1"].error
    assert "annotation 5: bbox [9, 1, 2, 2] has no area inside the 8x6 image" in notes["2"].error
    assert any("4 degenerate boxes dropped" in r.getMessage() for r in caplog.records)
    log = BadSampleLog(str(tmp_path / "bad"))
    for sample in dataset.bad_samples:
        log.record(sample)
    assert log.count() == 0, "a note is no skipped sample"
    assert log.write_jsonl(str(tmp_path / "bad.jsonl")) == 0
    lines = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert sorted((line["stage"], line["image_id"]) for line in lines) == [
        ("dropped-boxes", "1"),
        ("dropped-boxes", "2"),
    ]


def test_a_box_of_integers_beyond_any_float_is_dropped_not_a_crash(tmp_path):
    """OverflowError (an int too large for a float) escaped the checks: `unexpected OverflowError`."""
    anns = [_ann(1), _ann(2, bbox=(10**400, 1, 2, 2)), _ann(3, bbox=(10**400, 1, -(10**400), 2))]
    dataset = read_dataset(_write(tmp_path, anns))
    assert dataset.num_dropped_boxes == 2 and dataset.annotations["1"].annotation_ids == ["1"]
    assert "annotation 2: bbox [1000" in dataset.bad_samples[0].error


def _decoder_batch(dataset, ids: list[str]) -> dict:
    records = {r.image_id: r for r in dataset.records}
    return {
        "image_id": np.array(ids),
        "image_uri": np.array([records[i].image_uri for i in ids]),
        "aug_seed": np.zeros(len(ids), np.int64),
        ANNOTATIONS_COLUMN: np.array([dataset.annotations[i].to_json() for i in ids]),
    }


def test_a_mask_that_cannot_be_decoded_is_a_named_bad_sample_of_the_decode_stage(tmp_path):
    corrupt = {"size": [HEIGHT, WIDTH], "counts": "\x7f\x7f!!zz"}  # compressed: the reader cannot tell
    cfg = _write(
        tmp_path, [_ann(7, segmentation=corrupt), _ann(8, image_id=2, segmentation=[[1, 1, 5, 1, 5, 4]])]
    )
    dataset = read_dataset(cfg)
    with pytest.raises(
        BadAnnotationError, match="image 1, annotation 7: cannot decode its segmentation: Invalid RLE"
    ):
        letterboxed_targets(dataset.annotations["1"], (HEIGHT, WIDTH), (48, 64), 64, False, 4, 2, 0)
    batch = _decoder_batch(dataset, ["1", "2"])
    spec = SampleSpec(64, "none", max_objects=4, max_masks=2)
    with pytest.raises(BadAnnotationError, match="image 1, annotation 7"):
        list(TrainSampleDecoder(None, spec)(batch))
    log = BadSampleLog(str(tmp_path / "bad"))
    [out] = list(TrainSampleDecoder(None, spec, log)(batch))
    assert out[IMAGE_COLUMN].shape[0] == 1 and out["masks"][0].any()
    [entry] = log.read_all()
    assert (entry.image_id, entry.stage) == ("1", "train") and "annotation 7: cannot decode" in entry.error


def test_a_polygon_far_outside_the_image_is_refused_before_pycocotools_rasterizes_it():
    far = [[1, 1, 5, 4, 1e9, 3]]  # pycocotools would walk a billion points, or run out of memory
    annotations = ImageAnnotations([[1.0, 1.0, 5.0, 4.0]], [0], [far], image_id="5", annotation_ids=["9"])
    with pytest.raises(
        BadAnnotationError, match="image 5, annotation 9: segmentation polygon 0 has a coordinate"
    ):
        letterboxed_targets(annotations, (HEIGHT, WIDTH), (48, 64), 64, False, 4, 2, 0)


def test_a_mask_not_the_size_of_the_decoded_image_is_a_named_error(tmp_path):
    """The reader checks RLE sizes against the annotated size; an image whose pixels are another
    size still fails by name in the worker, not by stretching the mask."""
    annotations = ImageAnnotations(
        [[1.0, 1.0, 3.0, 3.0]], [0], [_rle(6, 8)], image_id="5", annotation_ids=["9"]
    )
    with pytest.raises(
        BadAnnotationError, match=r"image 5, annotation 9: its segmentation decodes to 6x8 .* image is 12x16"
    ):
        letterboxed_targets(annotations, (12, 16), (48, 64), 64, False, 4, 2, 0)


def _labels_check(tmp_path, annotations: list[dict], overrides: list[str], caplog) -> list[str]:
    from vfmkd_ray.models.build import run_teacher_shapes
    from vfmkd_ray.training.trainer import check_labels, check_model

    cfg = load_config(None, tiny_overrides(tmp_path) + overrides)
    (tmp_path / "data").mkdir()
    dataset = read_dataset(_write(tmp_path / "data", annotations))
    caplog.set_level(logging.WARNING, logger="vfmkd_ray")
    check_labels(cfg, dataset, check_model(cfg, run_teacher_shapes(cfg)))
    return [r.getMessage() for r in caplog.records]


def test_crowd_only_data_is_warned_for_a_head_that_reads_boxes(tmp_path, caplog):
    head = ["neck.type=yolov8_pafpn", "heads.det.type=yolov8", "heads.det.num_classes=3"]
    lines = _labels_check(tmp_path, [_ann(1, crowd=1), _ann(2, image_id=2, crowd=1)], head, caplog)
    assert any(
        line.startswith("heads.det reads ground-truth boxes, but ")
        and "no usable box (2 crowd annotations" in line
        for line in lines
    ), lines


def test_a_sam_mask_head_on_annotations_without_segmentation_is_warned(tmp_path, caplog):
    head = [
        "neck.type=yolov8_pafpn",
        "heads.seg.type=sam_mask",
        "heads.seg.features=feature_mse",
        "heads.seg.teacher=sam",
    ]
    lines = _labels_check(tmp_path, [_ann(1), _ann(2, image_id=2)], head, caplog)
    assert any(
        line.startswith("heads.seg reads instance masks, but no usable annotation") for line in lines
    ), lines
    assert not any("ground-truth boxes" in line for line in lines), "it has boxes"
