"""Stored augmented views (``store.augment: yolov8``, ``under_augmentation: views``): what a view
is, drawn the same way by the precompute that stores it and by the run that trains on it.

View 0 of every image is its plain letterboxed image (validation reads it, and the close-mosaic
epochs warp it); views 1..K-1 of every training image are canvases of MMYOLO's YOLOv8 pipeline for
the student's size, always a mosaic, each drawn once from (seed, view, image id), with its
mosaic partners and MixUp sample among the training split (``ViewDraws.candidates``: a view never
shows a validation image). Records are drawn at the student's input size, and each teacher sees
its view at its own (``AugmentRecord.at_size``). The teacher's map is stored with the view's record
and the URIs of the images in it (``VIEW_RECORD_COLUMN``, ``VIEW_SOURCES_COLUMN``), so a row says
alone what its teacher saw. A training run draws the same record again, checks that it equals the
stored one, and replays it: the student's canvas is the teacher's at the student's scale, and the
stored map lies over all of it, nothing masked.
Each training row of a view carries its ``ViewContext``: the record and, per image in it, its URI
and annotations, so the decode stage needs nothing but the row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vfmkd_ray.data.augment.opencv import RENDERER
from vfmkd_ray.data.augment.recipe import AugmentSpec, yolov8_recipe, yolov8_spec
from vfmkd_ray.data.augment.record import AugmentRecord, DrawContext, draw_record
from vfmkd_ray.data.augment.replay import Sample, replay
from vfmkd_ray.data.splits import is_validation

if TYPE_CHECKING:
    from vfmkd_ray.config import ExperimentConfig

VIEW_RECORD_COLUMN = "aug_record"  # store column: the view's AugmentRecord as JSON ("" for view 0)
VIEW_SOURCES_COLUMN = "aug_sources"  # store column: JSON, image id -> URI of each image in the view
VIEW_CONTEXT_COLUMN = "view_context"  # training stream column: the row's ViewContext as JSON
VIEW_PIPELINE = "yolov8"  # the store.augment value that stores views of data.augment's pipeline


@dataclass(frozen=True)
class ViewDraws:
    """How the records of a store's views are drawn: the recipe, the run's seed, the student's input
    size (every teacher sees the same records, each at its own size: ``AugmentRecord.at_size``), and
    the images a view may show besides its own (the training split, sorted)."""

    spec: AugmentSpec
    seed: int
    size: int
    candidates: Sequence[str]
    recipe: str = "s"  # the YOLOv8 size of the recipe
    training: frozenset[str] = frozenset()  # the candidates, as a set: the images that get views

    @staticmethod
    def of_spec(view_spec: Mapping, image_ids: Sequence[str]) -> ViewDraws:
        """The draws a manifest's ``view_spec`` describes, over the dataset's ``image_ids``."""
        return ViewDraws.of(
            view_spec["recipe"], view_spec["seed"], view_spec["size"], image_ids, view_spec["val_fraction"]
        )

    @staticmethod
    def of(
        student_size: str, seed: int, size: int, image_ids: Sequence[str], val_fraction: float
    ) -> ViewDraws:
        candidates = sorted(i for i in image_ids if not is_validation(i, val_fraction))
        # No close-mosaic switch: a stored view is always a mosaic (the last epochs warp view 0).
        recipe = yolov8_recipe(student_size)
        return ViewDraws(yolov8_spec(recipe, 0), seed, size, candidates, recipe, frozenset(candidates))

    def record(self, image_id: str, view: int) -> AugmentRecord | None:
        """View ``view``'s record of ``image_id`` at the student's size; None for view 0 (plain)."""
        if view == 0:
            return None
        context = DrawContext(self.seed, view, view + 1, self.size, salt="view")
        return draw_record(self.spec, context, image_id, self.candidates)


def view_draws(cfg: ExperimentConfig, image_ids: Sequence[str]) -> ViewDraws | None:
    """How the stores of ``cfg`` draw their augmented views, over the dataset's ``image_ids`` (None:
    they store none)."""
    if cfg.store.augment != VIEW_PIPELINE:
        return None
    return ViewDraws.of(cfg.student.size, cfg.seed, cfg.input_size, image_ids, cfg.data.val_fraction)


def stored_view_count(image_id: str, views_per_image: int, spec: Mapping | None) -> int:
    """How many views a complete store holds of ``image_id``: every one, except in a store of
    augmented views (its manifest's ``view_spec``), which keeps the plain view 0 alone of a validation
    image (no run trains on its augmented views)."""
    if spec and is_validation(image_id, spec["val_fraction"]):
        return 1
    return views_per_image


def view_spec(student_size: str, size: int, seed: int, val_fraction: float) -> dict:
    """What a store's views were drawn with, as its manifest keeps it (``Manifest.view_spec``): a run
    whose draws differ trains on other canvases than its teacher saw, so it is refused. So is a store
    whose canvases another renderer drew (PIL's, before ``augment.opencv``): same records, other
    pixels."""
    return {
        "pipeline": VIEW_PIPELINE,
        "renderer": RENDERER,
        "recipe": yolov8_recipe(student_size),
        "size": size,
        "seed": seed,
        "val_fraction": val_fraction,
    }


def training_view(epoch: int, views_per_image: int, mosaic: bool) -> int:
    """The stored view epoch ``epoch`` trains on: the augmented views 1..K-1 in turn in mosaic
    epochs, the plain view 0 (warped) in the close-mosaic ones."""
    return 1 + epoch % (views_per_image - 1) if mosaic else 0


@dataclass(frozen=True)
class ViewContext:
    """What the decode stage needs to replay a row's view: its record (JSON, at the student's size)
    and, per image in it, the image's URI and annotations (``ImageAnnotations`` JSON, "" for none)."""

    record: str
    sources: dict[str, tuple[str, str]]

    def to_json(self) -> str:
        return json.dumps({"record": self.record, "sources": self.sources}, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> ViewContext:
        values = json.loads(text)
        return ViewContext(
            values["record"], {i: (uri, notes) for i, (uri, notes) in values["sources"].items()}
        )


def view_context(
    record: AugmentRecord, uris: Mapping[str, str], annotations: Mapping[str, str]
) -> ViewContext:
    """The context of a row whose view is ``record``: every image in it by ``uris``, with its
    ``annotations`` (JSON by image id; absent: none)."""
    sources = {i: (uris[i], annotations.get(i, "")) for i in dict.fromkeys(record.image_ids())}
    return ViewContext(record.to_json(), sources)


def view_contexts(
    draws: ViewDraws,
    image_ids: Sequence[str],
    view: int,
    uris: Mapping[str, str],
    annotations: Mapping[str, str],
) -> dict[str, str]:
    """Each image's ``ViewContext`` JSON at augmented view ``view``: what a stream of that view
    carries per row."""
    return {i: view_context(draws.record(i, view), uris, annotations).to_json() for i in image_ids}


def render_view(record: AugmentRecord, images: Mapping[str, np.ndarray], spec: AugmentSpec) -> np.ndarray:
    """The canvas a view's teacher sees: ``record`` replayed on ``images`` (decoded, by image id),
    ``H x W x 3`` uint8."""
    no_boxes, no_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return replay(record, lambda i: Sample(images[i], no_boxes, no_labels), spec).image
