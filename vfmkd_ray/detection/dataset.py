"""Detection samples: COCO boxes by image, and the Ray Data stage that letterboxes an image and its
boxes into fixed-size arrays (padded with label -1) for batching."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vfmkd_ray import storage
from vfmkd_ray.data.bad_samples import BadSample, BadSampleLog
from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import IMAGE_COLUMN, VALID_HW_COLUMN, is_validation, load_letterboxed

BOXES_COLUMN, LABELS_COLUMN = "boxes", "labels"


@dataclass(frozen=True)
class DetectionRecord:
    image_id: str
    image_uri: str
    width: int
    height: int
    boxes: list[list[float]]  # x1 y1 x2 y2, original pixels
    labels: list[int]  # 0-based class index


def read_detection_records(cfg: DataConfig, num_classes: int) -> tuple[list[DetectionRecord], list[dict]]:
    """Every image of the COCO file with its boxes, and the categories (their order is the class
    index). Crowd boxes are left out."""
    if cfg.annotations is None:
        raise ValueError("detection needs a COCO annotations file: data.annotations is null")
    root = storage.absolute(cfg.root)
    uri = storage.join(root, cfg.annotations)
    try:
        coco = json.loads(storage.read_text(uri))
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        index = {c["id"]: i for i, c in enumerate(categories)}
        by_image: dict[int, list[dict]] = {}
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                by_image.setdefault(ann["image_id"], []).append(ann)
        records = []
        for image in coco["images"]:
            anns = by_image.get(image["id"], [])
            records.append(
                DetectionRecord(
                    str(image["id"]),
                    storage.join(root, cfg.images_dir, image["file_name"]),
                    int(image["width"]),
                    int(image["height"]),
                    [
                        [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                        for a in anns
                    ],
                    [index[a["category_id"]] for a in anns],
                )
            )
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{uri} is not a COCO detection annotations file: {err!r}") from None
    if len(categories) != num_classes:
        raise ValueError(
            f"{uri} has {len(categories)} categories, detection.num_classes is {num_classes}: set it to match"
        )
    return records, categories


class DetectionSampleDecoder:
    """Records of one split -> ``image`` (uint8 letterbox), ``valid_hw``, ``boxes`` (max_objects x 4,
    letterbox pixels) and ``labels`` (-1 for padding). Unreadable images raise, naming the URI, or
    are recorded and skipped with a ``bad_samples`` log."""

    def __init__(
        self,
        input_size: int,
        max_objects: int,
        split: str,
        val_fraction: float,
        bad_samples: BadSampleLog | None = None,
    ):
        self.input_size, self.max_objects = input_size, max_objects
        self.want_val, self.val_fraction = split == "val", val_fraction
        self.bad_samples = bad_samples

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        samples = []
        for row, image_id in enumerate(batch["image_id"]):
            if is_validation(str(image_id), self.val_fraction) != self.want_val:
                continue
            try:
                samples.append(self._sample(batch, row))
            except BadImageError as err:
                if self.bad_samples is None:
                    raise
                uri = str(batch["image_uri"][row])
                self.bad_samples.record(BadSample(str(image_id), uri, "train", str(err)))
        if samples:
            yield {column: np.stack([s[column] for s in samples]) for column in samples[0]}

    def _sample(self, batch: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
        canvas, (height, width) = load_letterboxed(str(batch["image_uri"][row]), self.input_size, 0, "none")
        scale = width / max(1, int(batch["width"][row]))
        boxes = np.full((self.max_objects, 4), 0.0, np.float32)
        labels = np.full(self.max_objects, -1, np.int64)
        found = np.asarray(batch["boxes"][row], np.float32).reshape(-1, 4)[
            : self.max_objects
        ]  # flat or N x 4
        boxes[: len(found)] = found * scale
        labels[: len(found)] = np.asarray(batch["labels"][row], np.int64)[: self.max_objects]
        return {
            IMAGE_COLUMN: canvas,
            VALID_HW_COLUMN: np.array([height, width], np.int32),
            BOXES_COLUMN: boxes,
            LABELS_COLUMN: labels,
        }
