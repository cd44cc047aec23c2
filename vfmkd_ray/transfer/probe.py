"""A linear probe of a backbone before any fine-tune: how well its pooled features predict what
each image holds, the per-class object counts of its annotations (log(1 + count)).

Each backbone level is average-pooled and the levels concatenated; a ridge regression (features
standardised on the training split, the penalty chosen by 5-fold cross-validation on it; at most
``MAX_TRAIN_IMAGES`` / ``MAX_VAL_IMAGES`` images per split) is fit on
the training split and scored on the validation split as R^2 over all classes (1 is perfect, 0 is
no better than predicting the training mean). The images are letterboxed as in training, without
augmentation. It needs labelled images (a COCO file with boxes); otherwise there is no probe.
"""

from __future__ import annotations

import numpy as np
import torch

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.coco import CocoDataset, ImageRecord
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.label_subset import labelled_subset
from vfmkd_ray.data.samples import IMAGE_COLUMN, load_sample
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.models.students import build_student

PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)
# The dual-form fit holds an n x n matrix: larger splits are subsampled (by id hash, the same every
# time) to keep the probe seconds-to-minutes on a COCO-sized dataset.
MAX_TRAIN_IMAGES, MAX_VAL_IMAGES = 2000, 1000
FOLDS = 5
BATCH = 16


def count_probe(cfg: ExperimentConfig, dataset: CocoDataset) -> float | None:
    """R^2 on the validation split of the probe on ``cfg``'s student (its ``student.weights``, or
    random init from ``cfg.seed``), or None when the data has no labels or too few images per split."""
    if not dataset.categories:
        return None
    val_fraction = cfg.data.val_fraction
    train = [r for r in dataset.records if not is_validation(r.image_id, val_fraction)]
    train = labelled_subset(train, val_fraction, min(1.0, MAX_TRAIN_IMAGES / max(1, len(train))))
    val = [r for r in dataset.records if is_validation(r.image_id, val_fraction)][:MAX_VAL_IMAGES]
    if len(train) < 2 * FOLDS or len(val) < 2:
        return None
    torch.manual_seed(cfg.seed)
    backbone = build_student(cfg.student).eval()
    x_train, x_val = (_pooled(backbone, records, cfg) for records in (train, val))
    y_train, y_val = (_counts(dataset, records) for records in (train, val))
    return ridge_r2(x_train, y_train, x_val, y_val)


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """R^2 on (x_val, y_val) of a ridge fit on the training pair, its penalty chosen by k-fold CV."""
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)  # relative: a random backbone's deep levels are tiny, not constant
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    folds = np.arange(len(x_train)) % FOLDS

    def cv_error(penalty: float) -> float:
        errors = []
        for k in range(FOLDS):
            fit, held = folds != k, folds == k
            predicted = _ridge(x_train[fit], y_train[fit], penalty)(x_train[held])
            errors.append(float(((predicted - y_train[held]) ** 2).sum()))
        return sum(errors)

    best = min(PENALTIES, key=cv_error)
    predicted = _ridge(x_train, y_train, best)(x_val)
    total = float(((y_val - y_train.mean(0)) ** 2).sum())
    return 1.0 - float(((predicted - y_val) ** 2).sum()) / max(total, 1e-12)


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float):
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    # The dual form: features usually outnumber images here.
    alpha = np.linalg.solve(xc @ xc.T + penalty * np.eye(len(x)), y - y_mean)
    weights = xc.T @ alpha
    return lambda z: (z - x_mean) @ weights + y_mean


@torch.no_grad()
def _pooled(backbone: torch.nn.Module, records: list[ImageRecord], cfg: ExperimentConfig) -> np.ndarray:
    rows = []
    for start in range(0, len(records), BATCH):
        chunk = records[start : start + BATCH]
        images = np.stack(
            [
                load_sample(
                    r.image_uri,
                    None,
                    cfg.input_size,
                    0,
                    "none",
                    max_pixels=cfg.data.max_image_pixels,
                    expected_wh=(r.width, r.height),
                )[IMAGE_COLUMN]
                for r in chunk
            ]
        )
        levels = backbone(normalize(torch.from_numpy(images)))
        rows.append(torch.cat([level.float().mean(dim=(2, 3)) for level in levels], dim=1).numpy())
    return np.concatenate(rows).astype(np.float64)


def _counts(dataset: CocoDataset, records: list[ImageRecord]) -> np.ndarray:
    counts = np.zeros((len(records), len(dataset.categories)))
    for row, record in enumerate(records):
        annotations = dataset.annotations.get(record.image_id)
        for label in annotations.labels if annotations else ():
            counts[row, label] += 1
    return np.log1p(counts)
