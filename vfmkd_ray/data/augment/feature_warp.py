"""Stored teacher maps carried into an augmented sample's canvas (``under_augmentation: warp``).

A stored map is of one image letterboxed at the teacher's input size (top left, possibly mirrored
by the store's own ``store.augment``). A sample's record says where every pixel of its canvas came
from: the flip, the affine, and which mosaic tile (or the letterbox stage) at which resize. So each
cell of the target grid is traced back through the same placements the pixel replay used
(``geometry.mosaic_placements``) to a point of one source image, and that image's stored map is
sampled there (bilinear). A cell whose point lies on padding (a mosaic's or the affine's border) has
no map: its mask is false and the loss ignores it. A MixUp sample has no single map (its canvas is
two images blended): its mask is false everywhere. Photometric steps (HSV, blur, gray) are not
replayed on the map: that is the warp's fidelity loss, measured by ``vfmkd verify --augment``.

Legend: C channels, h/w the target (and stored) grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfmkd_ray.data.augment.geometry import Placement, letterbox_placement, mosaic_placements
from vfmkd_ray.data.augment.record import AugmentRecord


@dataclass(frozen=True)
class StoredMap:
    """One source image's stored map and what it was made of."""

    map_Chw: np.ndarray  # float32
    image_hw: tuple[int, int]  # the original image's height and width, in pixels
    mirrored: bool = False  # the map is of the mirrored image (store.augment hflip)


@dataclass(frozen=True)
class TracedCells:
    """Each target cell's source: which image (an index into the record's sources, -1 for none) and
    where in that image's stored grid (in cells, continuous)."""

    source_hw: np.ndarray  # h x w int64
    grid_x_hw: np.ndarray  # float64
    grid_y_hw: np.ndarray  # float64


def record_sources(record: AugmentRecord) -> tuple[str, ...]:
    """The images a record's canvas is made of: the sample's, then its mosaic partners."""
    return (record.image_id, *record.partners) if record.mosaic else (record.image_id,)


def trace_cells(
    record: AugmentRecord, image_hw: list[tuple[int, int]], map_hw: tuple[int, int], mirrored: list[bool]
) -> TracedCells:
    """Traces the centre of every cell of an ``map_hw`` grid over the sample's ``record.size``
    canvas back to the stored grid of its source image (``image_hw`` and ``mirrored`` per
    ``record_sources``)."""
    rows, cols = map_hw
    size = record.size
    ys, xs = np.meshgrid(
        (np.arange(rows) + 0.5) * size / rows, (np.arange(cols) + 0.5) * size / cols, indexing="ij"
    )
    if record.flip:
        xs = size - xs
    forward = np.array([record.matrix[:3], record.matrix[3:], [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    canvas_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    canvas_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    placements: list[Placement] = (
        mosaic_placements(image_hw, size, record.center)
        if record.mosaic
        else [letterbox_placement(*image_hw[0], size)]
    )
    source = np.full(map_hw, -1, np.int64)
    grid_x, grid_y = np.zeros(map_hw), np.zeros(map_hw)
    if record.mixup_with is not None:
        return TracedCells(source, grid_x, grid_y)
    for index, placement in enumerate(placements):
        x1, y1, x2, y2 = placement.region
        inside = (canvas_x >= x1) & (canvas_x < x2) & (canvas_y >= y1) & (canvas_y < y2)
        height, width = image_hw[index]
        # The resize rounds its sides down: per axis, the scale the pixels really got.
        resized_h, resized_w = placement.resized_hw
        original_x = (canvas_x - placement.offset[0]) * width / resized_w
        original_y = (canvas_y - placement.offset[1]) * height / resized_h
        if mirrored[index]:
            original_x = width - original_x
        # The stored letterbox scales the longer side to the teacher's input, so one original pixel
        # is map_side / longer side cells.
        longer = max(height, width)
        source[inside] = index
        grid_x[inside] = (original_x * cols / longer)[inside]
        grid_y[inside] = (original_y * rows / longer)[inside]
    return TracedCells(source, grid_x, grid_y)


def warp_stored_maps(
    record: AugmentRecord, maps: list[StoredMap | None], shape_Chw: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``shape_Chw`` target map of ``record``'s canvas from its sources' stored maps
    (``record_sources`` order; None: that image has no stored map, its cells are masked) and the
    mask (``h x w`` bool, true where a stored map covers the cell)."""
    channels, rows, cols = shape_Chw
    traced = trace_cells(
        record,
        [m.image_hw if m is not None else (1, 1) for m in maps],
        (rows, cols),
        [m.mirrored if m is not None else False for m in maps],
    )
    import torch  # here: the decode stage's processes import torch only when a run warps

    # Each source samples only its own cells: one bilinear lookup per target cell in all.
    target = torch.zeros(channels, rows * cols)
    mask = np.zeros(rows * cols, bool)
    source = traced.source_hw.reshape(-1)
    for index, stored in enumerate(maps):
        cells = np.flatnonzero(source == index)
        if stored is None or not len(cells):
            continue
        # grid_sample's coordinates (align_corners=False): -1 and 1 are the grid's outer edges.
        grid_x = traced.grid_x_hw.reshape(-1)[cells] * 2 / cols - 1
        grid_y = traced.grid_y_hw.reshape(-1)[cells] * 2 / rows - 1
        grid = torch.from_numpy(np.stack([grid_x, grid_y], axis=-1)).float()[None, None]
        sampled = torch.nn.functional.grid_sample(
            torch.as_tensor(stored.map_Chw, dtype=torch.float32)[None],
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        target.index_copy_(1, torch.from_numpy(cells), sampled[0, :, 0])
        mask[cells] = True
    return target.reshape(channels, rows, cols).numpy(), mask.reshape(rows, cols)
