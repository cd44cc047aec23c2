"""``vfmkd eval``: COCO mAP, AP50 and AP_small of a detector, with and without the crop-refine stage.

Images are letterboxed like in training, detections mapped back to original pixels, and scored by
pycocotools' ``COCOeval`` against the annotations of the evaluated split.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.pipeline import is_validation, load_letterboxed
from vfmkd_ray.detection.checkpoint import BEST_DETECTOR, load_detector
from vfmkd_ray.detection.dataset import DetectionRecord, read_detection_records
from vfmkd_ray.detection.inference import detect

MODES = {"whole": False, "crop_refine": True}
EVAL_FILE = "eval.json"
BATCH = 8


@dataclass(frozen=True)
class EvalResult:
    checkpoint: str
    split: str
    num_images: int
    metrics: dict[str, dict[str, float]]  # mode -> mAP, AP50, AP_small
    seconds: float


def run_eval(cfg: ExperimentConfig, checkpoint: str | None = None, split: str = "val") -> EvalResult:
    started = time.monotonic()
    cfg.s3.apply()
    run_dir = storage.join(storage.absolute(cfg.train.storage_path), cfg.name)
    checkpoint = checkpoint or storage.join(run_dir, BEST_DETECTOR)
    detector = load_detector(checkpoint).eval()
    records, categories = read_detection_records(cfg.data, detector.head.heatmap[-1].out_channels)
    if split != "all":
        records = [r for r in records if is_validation(r.image_id, cfg.data.val_fraction) == (split == "val")]
    if not records:
        raise ValueError(f"no images in the {split} split of {cfg.data.root}")
    ground_truth = _coco(records, categories)
    numbers = {r.image_id: n for n, r in enumerate(records, start=1)}  # COCO image ids of the split
    detections: dict[str, list[dict]] = {mode: [] for mode in MODES}
    size = cfg.detection.input_size
    for start in range(0, len(records), BATCH):
        chunk = records[start : start + BATCH]
        canvases = [load_letterboxed(r.image_uri, size, 0, "none") for r in chunk]
        images = normalize(torch.from_numpy(np.stack([c for c, _ in canvases])))
        for mode, refine in MODES.items():
            found = detect(
                detector,
                images,
                cfg.detection,
                refine,
                cfg.distill.max_patches_per_img,
                cfg.distill.min_patch_size,
            )
            for record, (_, (_, width)), dets in zip(chunk, canvases, found, strict=True):
                scale = width / record.width
                detections[mode] += _coco_results(numbers[record.image_id], dets, scale, categories)
        done = min(start + BATCH, len(records))
        print(f"[vfmkd eval] {done}/{len(records)} images", file=sys.stderr, flush=True)
    metrics = {mode: _score(ground_truth, found) for mode, found in detections.items()}
    result = EvalResult(checkpoint, split, len(records), metrics, time.monotonic() - started)
    storage.write_text_atomic(storage.join(run_dir, EVAL_FILE), json.dumps(result.__dict__, indent=2))
    return result


def _coco(records: list[DetectionRecord], categories: list[dict]) -> COCO:
    images, annotations = [], []
    for number, record in enumerate(records, start=1):
        images.append({"id": number, "width": record.width, "height": record.height})
        for (x1, y1, x2, y2), label in zip(record.boxes, record.labels, strict=True):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {"id": len(annotations) + 1, "image_id": number, "category_id": categories[label]["id"],
                 "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _coco_results(image_number: int, dets, scale: float, categories: list[dict]) -> list[dict]:
    return [
        {
            "image_id": image_number,
            "category_id": categories[int(label)]["id"],
            "bbox": [x1 / scale, y1 / scale, (x2 - x1) / scale, (y2 - y1) / scale],
            "score": float(score),
        }
        for (x1, y1, x2, y2), score, label in zip(dets.boxes.tolist(), dets.scores, dets.labels, strict=True)
    ]


def _score(ground_truth: COCO, results: list[dict]) -> dict[str, float]:
    if not results:
        return {"mAP": 0.0, "AP50": 0.0, "AP_small": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"mAP": float(stats[0]), "AP50": float(stats[1]), "AP_small": float(max(stats[3], 0.0))}
