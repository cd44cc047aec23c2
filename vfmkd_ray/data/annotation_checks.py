"""The rules a COCO annotation must meet before it trains, applied once where annotations enter
(``data.coco.read_dataset``), and the error the target builder raises when a mask still cannot be
decoded in a worker.

The COCO format (https://cocodataset.org/#format-data): ``bbox`` is ``[x, y, width, height]`` in
image pixels; ``segmentation`` is a list of polygons, each ``[x1, y1, x2, y2, ...]`` with at least
3 points, or an RLE ``{"size": [height, width], "counts": ...}`` of the image's own size;
``category_id`` is one of the file's ``categories``. An annotation that breaks one of these makes
its image a bad sample (``data.on_bad_sample``). A box is clipped to the image; one with no area
left (zero or negative width or height, outside the image, or not finite) is dropped with its
instance and counted, the image kept.

Plain Python over the parsed JSON, one call per annotation and no pycocotools: a file of a million
annotations is checked in seconds. Compressed RLE ``counts`` and how far polygons reach outside
the image are checked where masks are decoded (``data.targets``), the only place that reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from vfmkd_ray.config_yaml import clip

# A polygon coordinate this many image sides outside the image is an error: pycocotools rasterizes
# every edge point by point, so a far (or NaN) coordinate costs time and memory without bound.
POLYGON_MARGIN_SIDES = 1


class BadAnnotationError(ValueError):
    """An annotation whose mask cannot be decoded; the message names its image and annotation id."""


@dataclass(frozen=True)
class AnnotationProblem:
    """What is wrong with one annotation (or why its box was dropped)."""

    image_id: str
    annotation_id: str
    reason: str

    def __str__(self) -> str:
        return f"image {self.image_id}, annotation {self.annotation_id}: {self.reason}"


class Instance(NamedTuple):
    """One usable annotation: its box clipped to the image, 0-based label and segmentation (a tuple:
    one is made per annotation of the file)."""

    box: list[float]  # x1 y1 x2 y2, original pixels
    label: int
    segmentation: object  # polygons or RLE as written; None when it has none


@dataclass(frozen=True)
class Rejected:
    """An annotation that does not train: ``bad_sample`` makes its image a bad sample, otherwise
    only its degenerate box (and instance) is dropped."""

    reason: str
    bad_sample: bool


class CategoryLabels:
    """Category id -> 0-based label (categories sorted by id), and the valid ids for messages."""

    def __init__(self, categories: list[dict]):
        self.label_of = {c["id"]: i for i, c in enumerate(categories)}

    def describe(self) -> str:
        ids = list(self.label_of)
        if not ids:
            return "the file lists no categories"
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            return f"valid ids: {ids}"
        runs: list[list[int]] = []
        for i in ids:  # sorted: consecutive ids make one run, shown as a range
            if runs and i == runs[-1][1] + 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        return "valid ids: " + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def check_annotation(ann: dict, height: int, width: int, labels: CategoryLabels) -> Instance | Rejected:
    """One non-crowd annotation of a ``width`` x ``height`` image, checked and clipped."""
    category_id = ann.get("category_id")
    try:
        label = labels.label_of.get(category_id)
    except TypeError:  # an unhashable id: a list or an object
        label = None
    if label is None:
        return Rejected(f"category_id {category_id!r} is not in categories ({labels.describe()})", True)
    segmentation = ann.get("segmentation") or None
    if segmentation is not None and (problem := segmentation_problem(segmentation, height, width)):
        return Rejected(problem, True)
    box = clipped_box(ann.get("bbox"), height, width)
    return box if isinstance(box, Rejected) else Instance(box, label, segmentation)


def clipped_box(bbox: object, height: int, width: int) -> list[float] | Rejected:
    """``x1, y1, x2, y2`` of a COCO ``bbox`` clipped to the image, or why it is rejected: not four
    numbers (a bad sample), or no area inside the image (a dropped box)."""
    try:
        x, y, w, h = bbox  # type: ignore[misc]
        _ = x + y + w + h  # a TypeError unless all four are numbers
        x, y, w, h = float(x), float(y), float(w), float(h)
    except OverflowError:  # an integer too large for a float: no box of any image
        return Rejected(f"bbox {_clipped(bbox)} is not finite", False)
    except (TypeError, ValueError):
        return Rejected(f"bbox {_clipped(bbox)} is not [x, y, width, height] numbers", True)
    if not math.isfinite(x + y + w + h):  # one test finds a NaN or an infinity in any
        return Rejected(f"bbox {_clipped(bbox)} is not finite", False)
    if w <= 0 or h <= 0:
        return Rejected(f"bbox {bbox} has width {w:g} and height {h:g}: both must be positive", False)
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:
        return Rejected(f"bbox {bbox} has no area inside the {width}x{height} image", False)
    return [x1, y1, x2, y2]


def segmentation_problem(segmentation: object, height: int, width: int) -> str | None:
    """Why a COCO ``segmentation`` cannot be a mask of a ``width`` x ``height`` image, or None."""
    if isinstance(segmentation, list):
        for k, polygon in enumerate(segmentation):
            if problem := _polygon_problem(polygon):
                return f"segmentation polygon {k} {problem}"
        return None
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, height, width)
    return f"segmentation is a {type(segmentation).__name__}, neither polygons (a list) nor RLE (a dict)"


def _polygon_problem(polygon: object) -> str | None:
    if not isinstance(polygon, list):
        return f"is {_clipped(polygon)}, not a list of coordinates (segmentation must be a list of polygons)"
    if len(polygon) < 6 or len(polygon) % 2:
        return (
            f"has {len(polygon)} coordinates: a polygon is 3 or more x, y points (an even count, 6 or more)"
        )
    try:
        finite = math.isfinite(sum(polygon))  # one C-level pass finds a NaN or an infinity
    except TypeError:
        return "has a coordinate that is not a number"
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        return "has a coordinate that is not finite"
    return None


def far_polygon_problem(polygons: list, height: int, width: int) -> str | None:
    """Why checked polygons are too far outside the image to rasterize, or None. Asked by the
    target builder before it decodes a mask (a min and a max per polygon would double the reader's
    time on a large file)."""
    side = max(height, width)
    for k, polygon in enumerate(polygons):
        low, high = min(polygon), max(polygon)
        if low < -side * POLYGON_MARGIN_SIDES or high > side * (1 + POLYGON_MARGIN_SIDES):
            return (
                f"segmentation polygon {k} has a coordinate ({low:g} or {high:g}) far outside the "
                f"{width}x{height} image"
            )
    return None


def _rle_problem(rle: dict, height: int, width: int) -> str | None:
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        return f"RLE size {_clipped(size)} is not [height, width]"
    if size != [height, width]:
        return f"RLE size {size} is not the image's [height, width] [{height}, {width}]"
    if isinstance(counts, str):
        return None  # compressed: decoded (and so checked) only where masks are needed
    if not isinstance(counts, list) or not all(_is_int(v) and v >= 0 for v in counts):
        return f"RLE counts {_clipped(counts)} are neither a string nor a list of run lengths"
    if sum(counts) != height * width:
        return f"RLE counts cover {sum(counts)} pixels, not the image's {height}x{width} = {height * width}"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clipped(value: object) -> str:
    return clip(repr(value), 60)
