"""Collecting one head's predictions over an evaluated split and scoring them.

``BoxScorer``: detections mapped from the letterbox back to original pixels, scored by COCO bbox.
``MaskScorer``: each ground-truth instance is prompted with its own box; the predicted mask is
upsampled from ``MASK_STRIDE`` to the letterbox, cropped to the image and resized to original pixels;
mIoU is the mean IoU over prompted instances, segm AP scores the masks with the head's predicted
quality as confidence.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vfmkd_ray.batch import MASK_STRIDE, Batch
from vfmkd_ray.data.coco import CocoDataset, ImageRecord
from vfmkd_ray.data.coco_scores import GroundTruth, box_results, instance_mask, mask_result
from vfmkd_ray.data.targets import kept_instances
from vfmkd_ray.heads.base import Detections, MaskPredictions
from vfmkd_ray.models.build import ModelParts
from vfmkd_ray.models.multitask import ModelOutput

Score = Callable[[GroundTruth, list[dict], str], dict[str, float]]


class Scorer:
    """One head's predictions in one inference mode over the split, in COCO result form."""

    def __init__(self, head: str, mode: str, truth: GroundTruth, dataset: CocoDataset):
        self.head, self.mode, self.truth, self.dataset = head, mode, truth, dataset
        self.results: list[dict] = []

    def add(self, parts: ModelParts, out: ModelOutput, batch: Batch, chunk: list[ImageRecord]) -> None:
        model = parts.model
        head = parts.heads[self.head]
        rerun = partial(model.head_output, self.head)
        found = head.predict(model.heads[self.head], out.heads[self.head], batch, rerun, self.mode)
        for offset, (record, predictions) in enumerate(zip(chunk, found, strict=True)):
            self.add_image(record, predictions, batch, offset)

    def add_image(self, record: ImageRecord, predictions, batch: Batch, offset: int) -> None:
        raise NotImplementedError


class BoxScorer(Scorer):
    def add_image(self, record: ImageRecord, dets: Detections, batch: Batch, offset: int) -> None:
        scale = float(batch.valid_hw_B2[offset, 1]) / record.width
        boxes = (dets.boxes.float().cpu() / scale).numpy()
        labels, scores = dets.labels.cpu().tolist(), dets.scores.cpu().tolist()
        image_id = self.truth.image_ids[record.image_id]
        self.results += box_results(image_id, boxes, scores, labels, self.dataset.categories)

    def summary(self, score: Score) -> dict[str, float]:
        return score(self.truth, self.results, "bbox")


class MaskScorer(Scorer):
    def __init__(self, head: str, mode: str, truth: GroundTruth, dataset: CocoDataset):
        super().__init__(head, mode, truth, dataset)
        self.ious: list[float] = []

    def add_image(self, record: ImageRecord, preds: MaskPredictions, batch: Batch, offset: int) -> None:
        annotations = self.dataset.annotations.get(record.image_id)
        if annotations is None or not len(preds.box_index_M):
            return
        rows = kept_instances(annotations, batch.boxes_BN4.shape[1])
        masks = _original_masks(preds.logits_Mhw, batch.valid_hw_B2[offset], record)
        image_id = self.truth.image_ids[record.image_id]
        for mask, quality, row in zip(
            masks, preds.scores_M.tolist(), preds.box_index_M.tolist(), strict=True
        ):
            instance = rows[int(row)]
            truth = instance_mask(annotations.segmentations[instance], record).astype(bool)
            union = np.logical_or(mask, truth).sum()
            self.ious.append(float(np.logical_and(mask, truth).sum() / union) if union else 1.0)
            category = self.dataset.categories[annotations.labels[instance]]["id"]
            self.results.append(mask_result(image_id, mask, quality, category))

    def summary(self, score: Score) -> dict[str, float]:
        segm = score(self.truth, self.results, "segm")
        return {
            "mIoU": float(np.mean(self.ious)) if self.ious else 0.0,
            "instances": float(len(self.ious)),
            **segm,
        }


def _original_masks(
    logits_Mhw: torch.Tensor, valid_hw: torch.Tensor, record: ImageRecord
) -> list[np.ndarray]:
    """Mask logits at ``MASK_STRIDE`` -> boolean masks in the record's original pixels."""
    full = F.interpolate(
        logits_Mhw[:, None].float(), scale_factor=MASK_STRIDE, mode="bilinear", align_corners=False
    )
    height, width = int(valid_hw[0]), int(valid_hw[1])
    probabilities = torch.sigmoid(full[:, 0, :height, :width]).cpu().numpy()
    masks = []
    for probability in probabilities:
        image = Image.fromarray((probability * 255).astype(np.uint8))
        resized = np.asarray(image.resize((record.width, record.height), Image.BILINEAR))
        masks.append(resized >= 128)
    return masks
