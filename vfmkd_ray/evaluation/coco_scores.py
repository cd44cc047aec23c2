"""COCO scores with pycocotools: box mAP / AP50 / AP_small, mask (segm) AP, and the ground truth of
an evaluated split, all in original image pixels."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vfmkd_ray.data.coco import ImageAnnotations, ImageRecord
from vfmkd_ray.data.targets import decode_segmentation


def ground_truth(
    records: list[ImageRecord], annotations: dict[str, ImageAnnotations], categories: list[dict]
) -> COCO:
    """A COCO index of the split; images are numbered 1.. in ``records`` order."""
    images, anns = [], []
    for number, record in enumerate(records, start=1):
        images.append({"id": number, "width": record.width, "height": record.height})
        found = annotations.get(record.image_id, ImageAnnotations())
        for (x1, y1, x2, y2), label, segmentation in zip(
            found.boxes, found.labels, found.segmentations, strict=True
        ):
            w, h = x2 - x1, y2 - y1
            ann = {"id": len(anns) + 1, "image_id": number, "category_id": categories[label]["id"],
                   "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0}  # fmt: skip
            if segmentation is not None:
                ann["segmentation"] = segmentation
            anns.append(ann)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def box_results(
    image_number: int, boxes_N4: np.ndarray, scores, labels, categories: list[dict]
) -> list[dict]:
    """COCO result entries from original-pixel ``x1, y1, x2, y2`` boxes."""
    return [
        {
            "image_id": image_number,
            "category_id": categories[int(label)]["id"],
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
        }
        for (x1, y1, x2, y2), score, label in zip(boxes_N4.tolist(), scores, labels, strict=True)
    ]


def mask_result(image_number: int, mask_HW: np.ndarray, score: float, category_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask_HW.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_number, "category_id": category_id, "segmentation": rle, "score": float(score)}


def instance_mask(segmentation: object, record: ImageRecord) -> np.ndarray:
    return decode_segmentation(segmentation, (record.height, record.width))


def score(ground: COCO, results: list[dict], kind: str) -> dict[str, float]:
    """``kind`` is ``bbox`` or ``segm``; no results scores zero."""
    prefix = "" if kind == "bbox" else "segm_"
    if not results:
        return {f"{prefix}mAP": 0.0, f"{prefix}AP50": 0.0, f"{prefix}AP_small": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(ground, ground.loadRes(results), kind)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {
        f"{prefix}mAP": float(stats[0]),
        f"{prefix}AP50": float(stats[1]),
        f"{prefix}AP_small": float(max(stats[3], 0.0)),
    }
