"""Batches for Ray-free tests, made by the product's own sample path (``data.samples``)."""

from __future__ import annotations

import numpy as np
import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.coco import read_dataset
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.samples import IMAGE_COLUMN, VALID_HW_COLUMN, load_sample
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.data.targets import BOXES_COLUMN, LABELS_COLUMN, MASK_BOX_COLUMN, MASKS_COLUMN


def dataset_batch(
    cfg: ExperimentConfig, max_objects: int, max_masks: int = 0, count: int | None = None
) -> Batch:
    """The first ``count`` images of ``cfg``'s (synthetic) dataset as one batch, unaugmented."""
    write_synthetic_coco(cfg.data)
    dataset = read_dataset(cfg.data)
    records = dataset.records[:count] if count else dataset.records
    samples = [
        load_sample(
            r.image_uri,
            dataset.annotations.get(r.image_id),
            cfg.input_size,
            0,
            "none",
            max_objects,
            max_masks,
        )
        for r in records
    ]
    column = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
    return Batch(
        images_BCHW=normalize(column[IMAGE_COLUMN]),
        valid_hw_B2=column[VALID_HW_COLUMN],
        boxes_BN4=column.get(BOXES_COLUMN),
        labels_BN=column.get(LABELS_COLUMN),
        masks_BMhw=column.get(MASKS_COLUMN),
        mask_box_BM=column.get(MASK_BOX_COLUMN),
    )


def take(batch: Batch, index: torch.Tensor) -> Batch:
    """The rows ``index`` of every batch-first tensor of ``batch``."""
    pick = {name: getattr(batch, name) for name in ("boxes_BN4", "labels_BN", "masks_BMhw", "mask_box_BM")}
    return Batch(
        batch.images_BCHW[index],
        batch.valid_hw_B2[index],
        {k: v[index] for k, v in batch.teacher_features.items()},
        **{name: None if value is None else value[index] for name, value in pick.items()},
    )
