"""COCO scores with pycocotools: box mAP / AP50 / AP_small and mask (segm) AP of an evaluated split,
in original image pixels, against the annotations file's own ground truth."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vfmkd_ray import storage
from vfmkd_ray.data.coco import CocoDataset, ImageAnnotations, ImageRecord
from vfmkd_ray.data.targets import decode_segmentation


@dataclass(frozen=True)
class GroundTruth:
    """The COCO index of an evaluated split, straight from the annotations file: its own ``area``
    (the mask area COCO's small/medium/large ranges use) and ``iscrowd`` regions, which detections
    may hit without being false positives."""

    coco: COCO
    image_ids: dict[str, Any]  # record image id -> the file's own id, what results must name
    has_masks: bool  # every annotation has a segmentation: segm AP can be scored


def ground_truth(dataset: CocoDataset, records: list[ImageRecord]) -> GroundTruth:
    """The ground truth of ``records``: the COCO file's own, or for a dataset without one (YOLO
    labels) the checked annotations as COCO would hold them (numbered images, the polygon's area
    for an instance with one, the box's otherwise, no crowd regions)."""
    if dataset.coco_json is None:
        images, anns, categories = _from_annotations(dataset, records)
        ids = {image["file_name"]: image["id"] for image in images}
    else:
        raw = json.loads(storage.read_text(dataset.coco_json))
        wanted = {r.image_id for r in records}
        images = [image for image in raw["images"] if str(image["id"]) in wanted]
        anns = [dict(a) for a in raw.get("annotations", []) if str(a["image_id"]) in wanted]
        categories = raw.get("categories", [])
        ids = {str(image["id"]): image["id"] for image in images}
    for ann in anns:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return GroundTruth(coco, ids, all(ann.get("segmentation") for ann in anns))


def _from_annotations(dataset: CocoDataset, records: list[ImageRecord]) -> tuple[list, list, list]:
    images, anns = [], []
    for number, record in enumerate(records, start=1):
        # file_name carries the record's id back (``GroundTruth.image_ids``); COCO ids are numbers.
        size = {"width": record.width, "height": record.height}
        images.append({"id": number, "file_name": record.image_id, **size})
        found = dataset.annotations.get(record.image_id) or ImageAnnotations()
        for k, ((x1, y1, x2, y2), label) in enumerate(zip(found.boxes, found.labels, strict=True)):
            ann = {
                "id": len(anns) + 1,
                "image_id": number,
                "category_id": dataset.categories[label]["id"],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
            }
            if (segmentation := found.segmentations[k]) is not None:
                ann["segmentation"] = segmentation
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, record.height, record.width))
                ann["area"] = float(mask_utils.area(rle))
            anns.append(ann)
    return images, anns, dataset.categories


def box_results(image_id: Any, boxes_N4: np.ndarray, scores, labels, categories: list[dict]) -> list[dict]:
    """COCO result entries from original-pixel ``x1, y1, x2, y2`` boxes."""
    return [
        {
            "image_id": image_id,
            "category_id": categories[int(label)]["id"],
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
        }
        for (x1, y1, x2, y2), score, label in zip(boxes_N4.tolist(), scores, labels, strict=True)
    ]


def mask_result(image_id: Any, mask_HW: np.ndarray, score: float, category_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask_HW.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "category_id": category_id, "segmentation": rle, "score": float(score)}


def instance_mask(segmentation: object, record: ImageRecord) -> np.ndarray:
    return decode_segmentation(segmentation, (record.height, record.width))


def score(
    truth: GroundTruth, results: list[dict], kind: str, image_ids: list | None = None
) -> dict[str, float]:
    """``kind`` is ``bbox`` or ``segm``; no results scores zero; segm without ground-truth masks is
    not scored (NaN). ``image_ids`` (the file's own ids): only those images (default: all)."""
    prefix = "" if kind == "bbox" else "segm_"
    if kind == "segm" and not truth.has_masks:
        return {f"{prefix}mAP": math.nan, f"{prefix}AP50": math.nan, f"{prefix}AP_small": math.nan}
    ground = truth.coco
    if not results:
        return {f"{prefix}mAP": 0.0, f"{prefix}AP50": 0.0, f"{prefix}AP_small": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(ground, ground.loadRes(results), kind)
        if image_ids is not None:
            evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # pycocotools answers -1 where the split has no ground truth of a kind (no small objects).
    stats = [float(v) if v >= 0 else math.nan for v in evaluation.stats]
    return {f"{prefix}mAP": stats[0], f"{prefix}AP50": stats[1], f"{prefix}AP_small": stats[3]}
