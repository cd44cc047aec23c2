"""Ground truth in the student's frame: boxes and masks letterboxed and mirrored exactly like the
image, masks decoded from polygons and RLE, padding rows and seeded mask sampling."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vfmkd_ray.data.coco import ImageAnnotations
from vfmkd_ray.data.images import is_flipped
from vfmkd_ray.data.targets import MASK_STRIDE, decode_segmentation, kept_instances, letterboxed_targets

# A 100 x 200 (h x w) image: a square polygon on the left and an RLE rectangle on the right.
SQUARE = [[10.0, 20.0, 50.0, 20.0, 50.0, 60.0, 10.0, 60.0]]
RIGHT = np.zeros((100, 200), np.uint8)
RIGHT[40:80, 150:190] = 1


def _annotations(rle_counts: str) -> ImageAnnotations:
    rle = mask_utils.encode(np.asfortranarray(RIGHT))
    if rle_counts == "compressed":
        rle["counts"] = rle["counts"].decode("ascii")
    else:  # COCO's uncompressed form: a list of run lengths
        flat = RIGHT.flatten(order="F")
        changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
        rle = {"size": [100, 200], "counts": np.diff(np.concatenate([[0], changes])).tolist()}
    return ImageAnnotations(
        boxes=[[10.0, 20.0, 50.0, 60.0], [150.0, 40.0, 190.0, 80.0], [5.0, 5.0, 5.0, 9.0]],  # last: empty
        labels=[0, 2, 1],
        segmentations=[SQUARE, rle, None],
    )


@pytest.mark.parametrize("rle_counts", ["compressed", "uncompressed"])
def test_polygons_and_rle_decode_to_the_same_masks_as_drawn(rle_counts):
    annotations = _annotations(rle_counts)
    square = decode_segmentation(SQUARE, (100, 200))
    assert square.shape == (100, 200) and 1500 <= square.sum() <= 1800  # 40 x 40, rasterised
    np.testing.assert_array_equal(decode_segmentation(annotations.segmentations[1], (100, 200)), RIGHT)
    with pytest.raises(ValueError, match="neither polygons nor RLE"):
        decode_segmentation("M 0 0", (100, 200))


@pytest.mark.parametrize("flipped", [False, True])
def test_boxes_and_masks_follow_the_letterbox_and_the_mirror(flipped):
    annotations = _annotations("compressed")
    size = 64  # the 200 px side becomes 64: scale 0.32, the content is 32 x 64
    out = letterboxed_targets(annotations, (100, 200), (32, 64), size, flipped, 4, 2, seed=0)
    assert out["labels"].tolist() == [0, 2, -1, -1], "the zero-area box is dropped, the rest padded"
    right = [150.0, 40.0, 190.0, 80.0] if not flipped else [10.0, 40.0, 50.0, 80.0]
    np.testing.assert_allclose(out["boxes"][1], np.array(right) * 0.32, rtol=1e-6)
    assert out["mask_box"].tolist() == [0, 1]
    grid = size // MASK_STRIDE
    assert out["masks"].shape == (2, grid, grid)
    assert not out["masks"][:, 8:].any(), "nothing below the content (32 px = 8 mask cells)"
    mask = out["masks"][1]  # the RLE rectangle: columns 150-190 of 200, rows 40-80 of 100
    columns = np.flatnonzero(mask.any(axis=0))
    expected = (12, 15) if not flipped else (1, 4)  # 150 / 200 * 16 = 12, mirrored: 10 / 200 * 16 = 0.8
    assert columns.min() == pytest.approx(expected[0], abs=1) and columns.max() == pytest.approx(
        expected[1], abs=1
    )
    box = out["boxes"][1] / MASK_STRIDE  # the box and the mask agree, mirrored or not
    assert box[0] - 1 <= columns.min() and columns.max() <= box[2] + 1


def test_mask_sampling_is_seeded_and_bounded():
    many = ImageAnnotations(
        boxes=[[i * 10.0, 0.0, i * 10.0 + 8, 8.0] for i in range(10)],
        labels=[0] * 10,
        segmentations=[
            [[i * 10.0, 0.0, i * 10.0 + 8, 0.0, i * 10.0 + 8, 8.0, i * 10.0, 8.0]] for i in range(10)
        ],
    )
    draws = [
        letterboxed_targets(many, (100, 100), (64, 64), 64, False, 20, 3, seed)["mask_box"]
        for seed in range(6)
    ]
    assert all(len(set(d.tolist())) == 3 for d in draws)
    np.testing.assert_array_equal(
        draws[0], letterboxed_targets(many, (100, 100), (64, 64), 64, False, 20, 3, 0)["mask_box"]
    )
    assert len({tuple(d.tolist()) for d in draws}) > 1
    assert kept_instances(many, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="masks need their boxes"):
        letterboxed_targets(many, (100, 100), (64, 64), 64, False, 0, 3, 0)


def test_the_mirror_draw_is_the_images():
    assert not is_flipped(3, "none")
    flips = {is_flipped(seed, "hflip") for seed in range(20)}
    assert flips == {True, False}
