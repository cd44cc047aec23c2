"""The precompute's image stage: image rows -> the canvases the teacher sees (``ImageLoader``).

A plain callable for ``Dataset.map_batches``; it imports nothing from Ray, so it is testable on
in-memory batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from vfmkd_ray.data.augment.recipe import AugmentSpec
from vfmkd_ray.data.augment.record import AugmentRecord
from vfmkd_ray.data.bad_samples import BadSample, BadSampleLog
from vfmkd_ray.data.config import DEFAULT_MAX_IMAGE_PIXELS
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.samples import IMAGE_COLUMN, load_letterboxed, read_image
from vfmkd_ray.data.views import VIEW_RECORD_COLUMN, VIEW_SOURCES_COLUMN, render_view


class ImageLoader:
    """``image_uri`` + ``aug_seed`` -> letterboxed uint8 ``image`` and its ``valid_h``/``valid_w``.

    A generator over batches: with a ``bad_samples`` log, unreadable images (and images above
    ``max_pixels`` or, where the batch has ``width``/``height`` columns, not that size) are
    recorded and dropped (a batch with none left yields nothing); without one they raise, naming
    the URI.
    """

    def __init__(
        self,
        input_size: int,
        policy: str,
        bad_samples: BadSampleLog | None = None,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        view_spec: AugmentSpec | None = None,
    ):
        """``view_spec``: the recipe of a store's augmented views (``store.augment: yolov8``); a row
        with a view record becomes that view's canvas, whole (``data.views``)."""
        self.input_size, self.policy, self.bad_samples = input_size, policy, bad_samples
        self.max_pixels, self.view_spec = max_pixels, view_spec

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        keep, images, heights, widths = [], [], [], []
        # The annotated sizes (ImageRecord.width/height, 0 for unknown) when the rows carry them.
        unknown = np.zeros(len(batch["image_uri"]), np.int64)
        columns = (
            batch["image_uri"],
            batch["aug_seed"],
            batch.get("width", unknown),
            batch.get("height", unknown),
        )
        views = batch.get(VIEW_RECORD_COLUMN)
        for row, (uri, seed, annotated_w, annotated_h) in enumerate(zip(*columns, strict=True)):
            expected_wh = (int(annotated_w), int(annotated_h))
            try:
                if views is not None and str(views[row]):
                    if self.view_spec is None:
                        raise ValueError(
                            f"image {batch['image_id'][row]}'s row holds a view record, and the loader "
                            "has no view recipe (store.augment yolov8)"
                        )
                    record, sources = str(views[row]), str(batch[VIEW_SOURCES_COLUMN][row])
                    own = str(batch["image_id"][row])
                    canvas = view_canvas(
                        record, sources, own, self.input_size, self.view_spec, self.max_pixels, expected_wh
                    )
                    height = width = self.input_size
                else:
                    canvas, (height, width) = load_letterboxed(
                        str(uri), self.input_size, int(seed), self.policy, self.max_pixels, expected_wh
                    )
            except BadImageError as err:
                if self.bad_samples is None:
                    raise
                self.bad_samples.record(
                    BadSample(str(batch["image_id"][row]), str(uri), "precompute", str(err))
                )
                continue
            keep.append(row)
            images.append(canvas)
            heights.append(height)
            widths.append(width)
        if keep:
            yield {
                **{name: np.asarray(column)[keep] for name, column in batch.items()},
                IMAGE_COLUMN: np.stack(images),
                "valid_h": np.array(heights, dtype=np.int32),
                "valid_w": np.array(widths, dtype=np.int32),
            }


def view_canvas(
    record_json: str,
    sources_json: str,
    image_id: str,
    size: int,
    spec: AugmentSpec,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    expected_wh: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """The canvas a stored view's teacher sees at ``size`` (``3 x size x size`` uint8, as
    ``load_letterboxed``'s): its record (drawn at the student's size) replayed on the images its
    sources name (JSON, image id -> URI); a partner's error says whose partner it is.
    ``expected_wh``: the annotated size of ``image_id``'s own image."""
    record = AugmentRecord.from_json(record_json)
    images = {}
    for source, uri in json.loads(sources_json).items():
        own = source == image_id
        try:
            images[source] = read_image(uri, max_pixels, expected_wh if own else (0, 0))
        except BadImageError as err:
            if own:
                raise
            raise BadImageError(f"mosaic partner {source} of a view of image {image_id}: {err}") from None
    return np.ascontiguousarray(render_view(record.at_size(size), images, spec).transpose(2, 0, 1))
