"""COCO box scores inside the training loop, for ``train.best_metric`` (``<head>/mAP``, ``AP50``,
``AP_small``) every ``train.eval_every_epochs`` and at the last epoch.

Every worker predicts with each box head on its validation batches, through what validation scores
(the EMA of the weights when the run keeps one), in letterbox pixels; rank 0 gathers them, maps
them to the original pixels of each image and scores them with pycocotools against the annotations
file's own ground truth of the validation split, as ``vfmkd eval`` does; every worker gets the
scores back, so the epoch's record is the same on all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from vfmkd_ray.batch import Batch
from vfmkd_ray.data.coco import CocoDataset
from vfmkd_ray.data.coco_scores import GroundTruth, box_results, ground_truth, score
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.heads.base import TaskHead
from vfmkd_ray.training.collectives import from_rank_zero, gather_across_workers


@dataclass(frozen=True)
class Found:
    """One image's detections of one head, in letterbox pixels."""

    head: str
    image_id: str
    boxes_N4: np.ndarray
    scores: list[float]
    labels: list[int]
    letterbox_width: int  # the image's width in the letterbox: its scale over the original width


def box_heads(heads: dict[str, TaskHead]) -> list[str]:
    return [name for name, head in heads.items() if head.kind == "boxes"]


def evaluates(epoch: int, epochs: int, every: int, always: bool = False) -> bool:
    """Whether epoch ``epoch`` (1-based) of ``epochs`` is scored: every ``every``-th, the last, and
    any marked ``always`` (MMYOLO's close-mosaic epochs: its ``dynamic_intervals``)."""
    return every > 0 and (epoch % every == 0 or epoch == epochs or always)


class InLoopCoco:
    """Args:
    heads: the run's heads (only box heads are scored).
    rank: this worker's; rank 0 scores.
    truth: called once, on rank 0: the dataset whose validation split is scored, and its
        ``val_fraction``.
    """

    def __init__(self, heads: dict[str, TaskHead], truth: Callable[[], tuple[CocoDataset, float]], rank: int):
        self.heads = {name: heads[name] for name in box_heads(heads)}
        self.rank = rank
        self._truth_source = truth
        self._truth: tuple[CocoDataset, GroundTruth] | None = None
        self.found: list[Found] = []

    @torch.no_grad()
    def add(self, model: nn.Module, batch: Batch) -> None:
        """``model``'s detections on ``batch`` (a validation batch carrying its image ids)."""
        ids = batch.image_ids()
        if not ids:
            raise ValueError("in-loop COCO scores need the validation batches' image ids")
        out = model(batch.images_BCHW)
        widths = batch.valid_hw_B2[:, 1].tolist()
        for name, head in self.heads.items():
            rerun = partial(model.head_output, name)
            mode = head.eval_modes()[0]  # the head's own inference; vfmkd eval scores the others
            detections = head.predict(model.heads[name], out.heads[name], batch, rerun, mode)
            for image_id, dets, width in zip(ids, detections, widths, strict=True):
                self.found.append(
                    Found(
                        name,
                        image_id,
                        dets.boxes.float().cpu().numpy(),
                        dets.scores.float().cpu().tolist(),
                        dets.labels.cpu().tolist(),
                        int(width),
                    )
                )

    def scores(self) -> dict[str, float]:
        """``<head>/<metric>`` over every worker's detections since the last call (a collective:
        every worker calls it)."""
        everything = gather_across_workers(self.found)
        self.found = []
        result = self._score(everything) if self.rank == 0 else {}
        return from_rank_zero(result)

    def _score(self, found: list[Found]) -> dict[str, float]:
        dataset, truth = self._ground_truth()
        records = {record.image_id: record for record in dataset.records}
        results: dict[str, list[dict]] = {name: [] for name in self.heads}
        # The images the stream delivered (each has an entry, detections or none): one it left out
        # (a bad image skipped, an image no store holds under missing_features: skip) is no miss.
        scored = sorted(
            {truth.image_ids[item.image_id] for item in found if item.image_id in truth.image_ids}
        )
        for item in found:
            record = records.get(item.image_id)
            if record is None or item.image_id not in truth.image_ids:
                raise ValueError(f"validation image {item.image_id!r} is not in {dataset.source}'s split")
            scale = item.letterbox_width / record.width
            results[item.head] += box_results(
                truth.image_ids[item.image_id],
                item.boxes_N4 / scale,
                item.scores,
                item.labels,
                dataset.categories,
            )
        # A score that does not apply (no small objects in the split: NaN) is left out, not logged.
        return {
            f"{name}/{metric}": value
            for name, head_results in results.items()
            for metric, value in score(truth, head_results, "bbox", scored).items()
            if not math.isnan(value)
        }

    def _ground_truth(self) -> tuple[CocoDataset, GroundTruth]:
        if self._truth is None:
            dataset, val_fraction = self._truth_source()
            split = [r for r in dataset.records if is_validation(r.image_id, val_fraction)]
            self._truth = (dataset, ground_truth(dataset, split))
        return self._truth
