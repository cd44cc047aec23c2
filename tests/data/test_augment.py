"""Augmentation records and their replay (MMYOLO's YOLOv8 pipeline), on hand-checked cases."""

from dataclasses import replace

import numpy as np
import pytest

from vfmkd_ray.data.augment.geometry import affine, hflip, letterbox_stage, mosaic
from vfmkd_ray.data.augment.photometric import hsv
from vfmkd_ray.data.augment.recipe import PAD_VALUE, AugmentSpec, yolov8_spec
from vfmkd_ray.data.augment.record import AugmentRecord, DrawContext, draw_record
from vfmkd_ray.data.augment.replay import Sample, replay

SIZE = 64
NONE = AugmentSpec(  # every draw an identity: what the pipeline none trains on
    mosaic=False,
    scaling_range=(1.0, 1.0),
    max_translate=0.0,
    hsv_deltas=(0.0, 0.0, 0.0),
    flip_prob=0.0,
    albu_prob=0.0,
    close_mosaic_epochs=0,
)


def _image(height: int, width: int, value: int) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def test_a_box_through_mosaic_lands_in_its_quadrant_with_its_offset_and_is_clipped():
    """Four 32 x 64 (h x w) tiles fit 64 px without resizing; the centre (40, 24) puts tile 0's
    bottom-right corner there. The same box (10, 4, 30, 20) in each tile moves by that tile's
    paste offset; a top-left tile cut by the canvas edge clips its box."""
    box = np.array([[10.0, 4.0, 30.0, 20.0]], np.float32)
    tiles = [(_image(32, 64, 10 * (i + 1)), box) for i in range(4)]
    canvas, moved = mosaic(tiles, SIZE, center=(40, 24))
    assert canvas.shape == (128, 128, 3)
    # top-left: pasted at x 0..40 (cut: crop starts at x 24), y 0..24 (crop starts at y 8)
    np.testing.assert_array_equal(moved[0], [[0.0, 0.0, 6.0, 12.0]])  # (10-24, 4-8, 30-24, 20-8), clipped
    np.testing.assert_array_equal(moved[1], [[50.0, 0.0, 70.0, 12.0]])  # top-right: x from 40, y cut by 8
    np.testing.assert_array_equal(moved[2], [[0.0, 28.0, 6.0, 44.0]])  # bottom-left: y from 24, x cut by 24
    np.testing.assert_array_equal(moved[3], [[50.0, 28.0, 70.0, 44.0]])  # bottom-right: offset (40, 24)
    assert (
        canvas[0, 0, 0] == 10
        and canvas[0, 40, 0] == 20
        and canvas[24, 0, 0] == 30
        and canvas[24, 40, 0] == 40
    )
    assert canvas[127, 127, 0] == PAD_VALUE  # beyond the bottom-right tile


def test_mosaic_resizes_each_tile_to_fit_the_output_size():
    box = np.array([[0.0, 0.0, 128.0, 32.0]], np.float32)  # the whole 32 x 128 image, halved to fit
    tiles = [(_image(32, 128, 50), box)] + [(_image(8, 8, 0), np.zeros((0, 4), np.float32))] * 3
    _, moved = mosaic(tiles, SIZE, center=(64, 64))
    np.testing.assert_array_equal(moved[0], [[0.0, 48.0, 64.0, 64.0]])  # 64 x 16 tile ending at (64, 64)


def test_a_box_through_the_affine_matrix_scales_and_translates_and_the_filter_drops_degenerate_ones():
    canvas = _image(128, 128, 0)
    boxes = np.array(
        [[32.0, 32.0, 64.0, 48.0], [0.0, 0.0, 3.0, 100.0], [80.0, 80.0, 96.0, 96.0], [120, 0, 128, 8]],
        np.float32,
    )
    scale, shift = 0.5, (40.0, 24.0)
    matrix = (scale, 0.0, shift[0] - scale * 64, 0.0, scale, shift[1] - scale * 64)  # as draw_record builds
    out, moved, keep = affine(canvas, boxes, matrix, SIZE, scale, yolov8_spec("s"))
    assert out.shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(moved[0], [24.0, 8.0, 40.0, 16.0])  # (x - 64) / 2 + 40, (y - 64) / 2 + 24
    np.testing.assert_allclose(moved[2], [48.0, 32.0, 56.0, 40.0])
    assert keep.tolist() == [True, False, True, False]  # 1.5 px wide; 8 x 8 kept; clipped to nothing
    assert out[0, 0, 0] == PAD_VALUE and out[30, 30, 0] == 0  # outside the warped canvas: the border


def test_flip_mirrors_boxes_and_hsv_leaves_them_alone():
    image = np.zeros((16, 32, 3), np.uint8)
    image[:, :8] = 200
    flipped, boxes = hflip(image, np.array([[0.0, 2.0, 8.0, 10.0]], np.float32))
    np.testing.assert_array_equal(boxes, [[24.0, 2.0, 32.0, 10.0]])
    assert flipped[0, 31, 0] == 200 and flipped[0, 0, 0] == 0
    colour = np.full((4, 4, 3), (200, 100, 50), np.uint8)
    assert np.array_equal(hsv(colour, (1.0, 1.0, 1.0)), colour)
    darker = hsv(colour, (1.0, 1.0, 0.5))
    assert darker.max() < colour.max() and darker.shape == colour.shape


def test_the_close_mosaic_switch_happens_at_the_right_epoch():
    spec = yolov8_spec("s", close_mosaic_epochs=10)
    assert [spec.mosaic_at(epoch, 30) for epoch in (0, 19, 20, 29)] == [True, True, False, False]
    context = DrawContext(seed=0, epoch=20, epochs=30, size=SIZE)
    record = draw_record(spec, context, "a", ["b", "c"])
    assert not record.mosaic and record.partners == () and record.mixup_with is None
    assert yolov8_spec("m").mixup_prob == 0.1 and yolov8_spec("n").scaling_range == (0.5, 1.5)
    assert yolov8_spec("x").scaling_range == pytest.approx((0.1, 1.9))


def _dataset() -> dict[str, Sample]:
    rng = np.random.default_rng(0)
    samples = {}
    for i, image_id in enumerate("abcdef"):
        height, width = 48 + 8 * i, 80 - 4 * i
        boxes = np.array([[4.0, 6.0, 40.0, 30.0], [20.0, 10.0, 60.0, 44.0]], np.float32)
        samples[image_id] = Sample(
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8), boxes, np.array([i % 3, 1])
        )
    return samples


def test_records_are_deterministic_per_seed_epoch_and_image_and_differ_across_epochs():
    spec = replace(yolov8_spec("l"), mixup_prob=1.0, albu_prob=0.5)
    ids = list("abcdef")
    first = draw_record(spec, DrawContext(0, 3, 30, SIZE), "a", ids)
    assert draw_record(spec, DrawContext(0, 3, 30, SIZE), "a", ids) == first
    assert draw_record(spec, DrawContext(0, 4, 30, SIZE), "a", ids) != first
    assert draw_record(spec, DrawContext(1, 3, 30, SIZE), "a", ids) != first
    assert draw_record(spec, DrawContext(0, 3, 30, SIZE), "b", ids) != first
    assert first.mixup_with is not None and first.mixup_with.mixup_with is None
    assert AugmentRecord.from_json(first.to_json()) == first  # it travels in a row as JSON


def test_the_same_record_replays_to_identical_pixels_and_targets():
    data = _dataset()
    spec = replace(yolov8_spec("l"), mixup_prob=1.0, albu_prob=1.0)
    record = draw_record(spec, DrawContext(0, 0, 30, SIZE), "a", list(data))
    again = AugmentRecord.from_json(record.to_json())
    one, two = replay(record, data.__getitem__, spec), replay(again, data.__getitem__, spec)
    assert one.image.shape == (SIZE, SIZE, 3) and one.image.dtype == np.uint8
    assert np.array_equal(one.image, two.image) and np.array_equal(one.boxes, two.boxes)
    assert np.array_equal(one.labels, two.labels) and len(one.boxes) == len(one.labels)
    assert ((one.boxes >= 0) & (one.boxes <= SIZE)).all()
    other_epoch = replay(
        draw_record(spec, DrawContext(0, 1, 30, SIZE), "a", list(data)), data.__getitem__, spec
    )
    assert not np.array_equal(one.image, other_epoch.image)


def test_no_augmentation_is_the_top_left_letterbox():
    data = _dataset()
    record = draw_record(NONE, DrawContext(0, 0, 1, SIZE), "a", [])
    sample = replay(record, data.__getitem__, NONE)
    expected, boxes = letterbox_stage(data["a"].image, data["a"].boxes, SIZE)
    np.testing.assert_allclose(sample.boxes, boxes, atol=1e-4)
    assert np.abs(sample.image.astype(int) - expected.astype(int)).max() <= 1  # an identity warp
    assert isinstance(NONE, AugmentSpec) and not record.flip and record.hsv_gains == (1.0, 1.0, 1.0)


def test_boxes_stay_over_their_objects_through_mosaic_affine_and_flip():
    """White rectangles on black at their boxes: after a whole replay (photometric steps off), every
    kept box still covers white pixels and its surroundings are not white."""
    spec = replace(yolov8_spec("s"), hsv_deltas=(0.0, 0.0, 0.0), albu_prob=0.0, flip_prob=0.5)
    data = {}
    for i, image_id in enumerate("abcd"):
        image = np.zeros((60 + 10 * i, 90 - 10 * i, 3), np.uint8)
        box = np.array([[10.0 + i, 12.0, 40.0 + 2 * i, 44.0]], np.float32)
        x1, y1, x2, y2 = box[0].astype(int)
        image[y1:y2, x1:x2] = 255
        data[image_id] = Sample(image, box, np.array([i]))
    checked = 0
    for epoch in range(6):
        record = draw_record(spec, DrawContext(7, epoch, 30, SIZE), "a", list(data))
        sample = replay(record, data.__getitem__, spec)
        for x1, y1, x2, y2 in sample.boxes:
            inner = sample.image[int(y1) + 1 : int(np.ceil(y2)) - 1, int(x1) + 1 : int(np.ceil(x2)) - 1]
            if inner.size:
                assert inner.mean() > 200, (epoch, (x1, y1, x2, y2))
                checked += 1
        assert (sample.image > 200).sum() <= sum(
            (x2 - x1 + 2) * (y2 - y1 + 2) for x1, y1, x2, y2 in sample.boxes
        ) * 3
    assert checked >= 6
