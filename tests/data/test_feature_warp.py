"""``warp``: stored teacher maps carried into an augmented canvas, checked on analytic fields.

A "ramp" map holds in each cell the original-image coordinates of the cell's centre, so a correct
warp must return, in each target cell, the original coordinates of the point the sample's pixels
came from there. That is checked against the affine's inverse by hand, and for mosaics against
the pixel replay itself, on images whose pixels encode their own coordinates and tile.
"""

from dataclasses import replace

import numpy as np
import pytest

from vfmkd_ray.data.augment.feature_warp import StoredMap, record_sources, warp_stored_maps
from vfmkd_ray.data.augment.geometry import affine, hflip, mosaic
from vfmkd_ray.data.augment.recipe import PAD_VALUE, AugmentSpec
from vfmkd_ray.data.augment.record import AugmentRecord

SIZE = 64
SPEC = AugmentSpec()


def ramp_map(height: int, width: int, cells: int, mirrored: bool = False) -> StoredMap:
    """A ``2 x cells x cells`` map over the letterbox of an image: channel 0 the original x of each
    cell's centre (of the mirrored image's content when ``mirrored``), channel 1 its y."""
    longer = max(height, width)
    centres = (np.arange(cells) + 0.5) * longer / cells
    xs, ys = np.meshgrid(centres, centres)
    if mirrored:
        xs = width - xs
    return StoredMap(np.stack([xs, ys]).astype(np.float32), (height, width), mirrored)


def cell_centres(cells: int) -> np.ndarray:
    return (np.arange(cells) + 0.5) * SIZE / cells


def plain(**changes) -> AugmentRecord:
    return replace(AugmentRecord(image_id="a", size=SIZE, mosaic=False), **changes)


def test_identity_returns_the_letterbox_and_masks_its_padding():
    """A 40 x 80 image letterboxed at 64: ratio 0.8, content 32 rows high; below it, no map."""
    cells = 16
    target, mask = warp_stored_maps(plain(), [ramp_map(40, 80, cells)], (2, cells, cells))
    xs, ys = np.meshgrid(cell_centres(cells), cell_centres(cells))
    inside = ys < 32
    np.testing.assert_array_equal(mask, inside)
    np.testing.assert_allclose(target[0][inside], (xs / 0.8)[inside], atol=1e-3)
    np.testing.assert_allclose(target[1][inside], (ys / 0.8)[inside], atol=1e-3)


def test_flip_scale_and_translate_follow_the_affine_inverse():
    """x' = s x + t then mirrored: the cell at x' comes from ((S - x') - t) / s on the letterbox."""
    cells, scale, tx, ty = 16, 0.75, 10.0, -4.0
    record = plain(matrix=(scale, 0.0, tx, 0.0, scale, ty), scale=scale, flip=True)
    target, mask = warp_stored_maps(record, [ramp_map(64, 64, cells)], (2, cells, cells))
    xs, ys = np.meshgrid(cell_centres(cells), cell_centres(cells))
    canvas_x, canvas_y = ((SIZE - xs) - tx) / scale, (ys - ty) / scale
    inside = (canvas_x >= 0) & (canvas_x < SIZE) & (canvas_y >= 0) & (canvas_y < SIZE)
    np.testing.assert_array_equal(mask, inside)
    assert 0 < mask.sum() < mask.size
    # Bilinear sampling of a linear field is exact except past the outer half cell, which clamps.
    interior = inside & (canvas_x > 2) & (canvas_x < SIZE - 2) & (canvas_y > 2) & (canvas_y < SIZE - 2)
    np.testing.assert_allclose(target[0][interior], canvas_x[interior], atol=1e-3)
    np.testing.assert_allclose(target[1][interior], canvas_y[interior], atol=1e-3)


def test_a_mirrored_stored_map_warps_to_the_same_target_as_the_plain_one():
    record = plain(matrix=(1.2, 0.0, -5.0, 0.0, 1.2, 3.0), scale=1.2)
    plain_target, plain_mask = warp_stored_maps(record, [ramp_map(50, 60, 16)], (2, 16, 16))
    mirrored_target, mirrored_mask = warp_stored_maps(
        record, [ramp_map(50, 60, 16, mirrored=True)], (2, 16, 16)
    )
    np.testing.assert_array_equal(plain_mask, mirrored_mask)
    np.testing.assert_allclose(mirrored_target[:, plain_mask], plain_target[:, plain_mask], atol=1e-3)


TILE_HW = [(120, 200), (200, 150), (90, 90), (160, 240)]


def coordinate_image(height: int, width: int, tile: int) -> np.ndarray:
    """Red: the column, green: the row, blue: 200 + the tile's index."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols, rows, np.full_like(rows, 200 + tile)], axis=-1).astype(np.uint8)


def replayed_pixels(record: AugmentRecord) -> np.ndarray:
    """The record's geometry replayed on the coordinate images, as the student's pixels are."""
    tiles = [(coordinate_image(h, w, i), np.zeros((0, 4), np.float32)) for i, (h, w) in enumerate(TILE_HW)]
    canvas, _ = mosaic(tiles, SIZE, record.center)
    image, _, _ = affine(canvas, np.zeros((0, 4), np.float32), record.matrix, SIZE, record.scale, SPEC)
    if record.flip:
        image, _ = hflip(image, np.zeros((0, 4), np.float32))
    return image.astype(np.float64)


@pytest.mark.parametrize("flip", [False, True])
def test_mosaic_tiles_warp_to_where_the_replayed_pixels_came_from(flip):
    """One cell per output pixel: where the replayed pixel and its 3 x 3 neighbours all come from
    one tile, the warp has that tile's map and its coordinates (within a pixel of the resampled
    ramp); where they are all padding, the mask is false."""
    scale = 0.9
    record = AugmentRecord(
        image_id="t0",
        size=SIZE,
        mosaic=True,
        partners=("t1", "t2", "t3"),
        center=(70, 50),
        matrix=(scale, 0.0, 32 - scale * SIZE, 0.0, scale, 28 - scale * SIZE),
        scale=scale,
        flip=flip,
    )
    assert record_sources(record) == ("t0", "t1", "t2", "t3")
    # Each tile's map says its own index in a third channel, so the source of a cell is checked too.
    maps = []
    for index, (h, w) in enumerate(TILE_HW):
        ramp = ramp_map(h, w, SIZE)
        maps.append(
            StoredMap(np.concatenate([ramp.map_Chw, np.full((1, SIZE, SIZE), index, np.float32)]), (h, w))
        )
    target, mask = warp_stored_maps(record, maps, (3, SIZE, SIZE))
    pixels = replayed_pixels(record)
    blue = pixels[..., 2]
    padded = np.pad(blue, 1, mode="edge")
    neighbourhood = np.stack([padded[dy : dy + SIZE, dx : dx + SIZE] for dy in range(3) for dx in range(3)])
    uniform = (neighbourhood == blue).all(axis=0)
    from_tile, from_padding = uniform & (blue >= 200), uniform & (blue == PAD_VALUE)
    assert from_tile.sum() > SIZE * SIZE / 4 and from_padding.sum() > 0
    assert mask[from_tile].all() and not mask[from_padding].any()
    np.testing.assert_allclose(target[2][from_tile], blue[from_tile] - 200, atol=1e-5)
    # The resized ramp is an interpolated ramp: a pixel's value is its source coordinate within one
    # original pixel (plus the half pixel between a pixel's index and its centre).
    np.testing.assert_allclose(target[0][from_tile], pixels[..., 0][from_tile] + 0.5, atol=1.5)
    np.testing.assert_allclose(target[1][from_tile], pixels[..., 1][from_tile] + 0.5, atol=1.5)


def test_a_tile_without_a_stored_map_and_a_mixup_sample_are_masked():
    record = AugmentRecord(
        image_id="t0",
        size=SIZE,
        mosaic=True,
        partners=("t1", "t2", "t3"),
        center=(SIZE, SIZE),
        matrix=(0.5, 0.0, 0.0, 0.0, 0.5, 0.0),
        scale=0.5,
    )
    maps = [ramp_map(h, w, 16) for h, w in TILE_HW]
    _, full = warp_stored_maps(record, maps, (2, 16, 16))
    _, missing = warp_stored_maps(record, [maps[0], None, maps[2], maps[3]], (2, 16, 16))
    assert full.any() and missing.sum() < full.sum()
    _, top_right_only = warp_stored_maps(record, [None, maps[1], None, None], (2, 16, 16))
    np.testing.assert_array_equal(missing, full & ~top_right_only)
    _, mixed = warp_stored_maps(replace(record, mixup_with=plain()), maps, (2, 16, 16))
    assert not mixed.any()
