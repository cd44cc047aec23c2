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
from vfmkd_ray.data.coco import ImageRecord
from vfmkd_ray.data.targets import decode_segmentation


@dataclass(frozen=True)
class GroundTruth:
    """The COCO index of an evaluated split, straight from the annotations file: its own ``area``
    (the mask area COCO's small/medium/large ranges use) and ``iscrowd`` regions, which detections
    may hit without being false positives."""

    coco: COCO
    image_ids: dict[str, Any]  # record image id -> the file's own id, what results must name
    has_masks: bool  # every annotation has a segmentation: segm AP can be scored


def ground_truth(annotations_uri: str, records: list[ImageRecord]) -> GroundTruth:
    raw = json.loads(storage.read_text(annotations_uri))
    wanted = {r.image_id for r in records}
    images = [image for image in raw["images"] if str(image["id"]) in wanted]
    anns = [dict(a) for a in raw.get("annotations", []) if str(a["image_id"]) in wanted]
    for ann in anns:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": raw.get("categories", [])}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    ids = {str(image["id"]): image["id"] for image in images}
    return GroundTruth(coco, ids, all(ann.get("segmentation") for ann in anns))


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
