"""``vfmkd eval``: the run's best model (or any model file) on one split of the dataset.

Per head and inference mode: COCO box mAP, AP50 and AP_small for box heads; mask mIoU (each
ground-truth instance prompted with its own box) and COCO segm AP for mask heads. Per feature term:
the teacher-student cosine and the term's loss against live teachers. Images are letterboxed as in
training (no augmentation); predictions are mapped back to original pixels before scoring.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from vfmkd_ray import run_files
from vfmkd_ray.batch import Batch
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.config_checks import used_teachers
from vfmkd_ray.data.coco import CocoDataset, ImageRecord, read_dataset
from vfmkd_ray.data.coco_scores import ground_truth, score
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.samples import IMAGE_COLUMN, VALID_HW_COLUMN, load_sample
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.targets import BOXES_COLUMN, LABELS_COLUMN, MASK_BOX_COLUMN, MASKS_COLUMN
from vfmkd_ray.evaluation.scoring import BoxScorer, MaskScorer
from vfmkd_ray.locations import check_locations
from vfmkd_ray.models import from_run
from vfmkd_ray.models.build import ModelParts
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.models.teachers.ensemble import run_teachers
from vfmkd_ray.progress import progress_bar
from vfmkd_ray.store.channel_stats import normalized_term_stats
from vfmkd_ray.store.phi_s import term_phi_s
from vfmkd_ray.training.step import model_step

BATCH = 8
EVAL_INSTANCES = 100  # boxes, and mask prompts when a head predicts masks, per image


@dataclass(frozen=True)
class EvalResult:
    checkpoint: str
    split: str
    num_images: int
    heads: dict[str, dict[str, dict[str, float]]]  # head -> inference mode -> metric -> value
    cosine: dict[str, float] = field(default_factory=dict)  # feature term -> teacher-student cosine
    losses: dict[str, float] = field(default_factory=dict)  # head or term -> its loss on the split
    seconds: float = 0.0


def run_eval(cfg: ExperimentConfig, checkpoint: str | None = None, split: str = "val") -> EvalResult:
    started = time.monotonic()
    cfg.s3.apply()
    check_locations(cfg, reads=("data.root",))
    run_dir = run_files.run_dir_of(cfg)
    checkpoint = checkpoint or run_files.path(run_dir, run_files.BEST_MODEL)
    parts, run_cfg = from_run.load_model(checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts.to(device).model.eval()
    dataset = read_dataset(cfg.data)
    records = _split(dataset.records, split, cfg.data.val_fraction)
    if not records:
        raise ValueError(f"no images in the {split} split of {cfg.data.root}")
    teachers = {a: build_teacher(run_cfg.teachers[a]).to(device) for a in used_teachers(run_cfg)}
    # Terms that standardise their targets read the statistics the training stores kept.
    stats = {k: v.to(device) for k, v in normalized_term_stats(run_cfg, parts.terms).items()}
    phi_s = {k: torch.as_tensor(v).to(device) for k, v in term_phi_s(run_cfg, parts.terms).items()}
    scorers = _scorers(parts, dataset, records)
    sums: dict[str, tuple[float, int]] = {}
    with progress_bar(f"eval {split}", len(records), show_rate=True) as bar:
        for start in range(0, len(records), BATCH):
            chunk = records[start : start + BATCH]
            batch = _batch(
                chunk, dataset, run_cfg.input_size, device, _eval_needs(parts), cfg.data.max_image_pixels
            )
            if teachers:
                batch.teacher_features = {
                    k: v.float() for k, v in run_teachers(teachers, batch.images_BCHW).items()
                }
            batch.teacher_stats, batch.teacher_phi_s = stats, phi_s
            with torch.no_grad():
                _accumulate(sums, model_step(parts.model, batch, parts), len(chunk))
                out = parts.model(batch.images_BCHW)
                for scorer in scorers:
                    scorer.add(parts, out, batch, chunk)
            bar.update(start + len(chunk))
    result = EvalResult(
        checkpoint=checkpoint,
        split=split,
        num_images=len(records),
        heads=_head_metrics(scorers),
        cosine={
            key.removeprefix("cos/"): value for key, value in _means(sums).items() if key.startswith("cos/")
        },
        losses={
            key.removeprefix("loss/"): value for key, value in _means(sums).items() if key.startswith("loss/")
        },
        seconds=time.monotonic() - started,
    )
    run_files.write_eval(run_dir, asdict(result))
    return result


def _split(records: list[ImageRecord], split: str, val_fraction: float) -> list[ImageRecord]:
    if split == "all":
        return records
    return [r for r in records if is_validation(r.image_id, val_fraction) == (split == "val")]


def _eval_needs(parts: ModelParts) -> tuple[int, int]:
    """(boxes, masks) per image: every instance, up to ``EVAL_INSTANCES``, and masks only when a
    head predicts them (decoding them costs a pycocotools pass per instance)."""
    needs = parts.needs
    return EVAL_INSTANCES, EVAL_INSTANCES if needs.max_masks else 0


def _batch(
    chunk: list[ImageRecord], dataset: CocoDataset, input_size: int, device, needs, max_pixels: int
) -> Batch:
    """Scored against the annotations, so an image that is not their size is an error here."""
    samples = [
        load_sample(
            r.image_uri,
            dataset.annotations.get(r.image_id),
            input_size,
            0,
            "none",
            *needs,
            max_pixels=max_pixels,
            expected_wh=(r.width, r.height),
        )
        for r in chunk
    ]
    column = {k: torch.from_numpy(np.stack([s[k] for s in samples])).to(device) for k in samples[0]}
    return Batch(
        images_BCHW=normalize(column[IMAGE_COLUMN]),
        valid_hw_B2=column[VALID_HW_COLUMN],
        boxes_BN4=column[BOXES_COLUMN],
        labels_BN=column[LABELS_COLUMN],
        masks_BMhw=column.get(MASKS_COLUMN),
        mask_box_BM=column.get(MASK_BOX_COLUMN),
    )


def _scorers(parts: ModelParts, dataset: CocoDataset, records: list[ImageRecord]) -> list:
    if not any(head.kind in ("boxes", "masks") for head in parts.heads.values()):
        return []
    truth = ground_truth(dataset, records)
    scorers: list = []
    for name, head in parts.heads.items():
        for mode in head.eval_modes():
            scorer_type = BoxScorer if head.kind == "boxes" else MaskScorer
            scorers.append(scorer_type(name, mode, truth, dataset))
    return scorers


def _head_metrics(scorers: list) -> dict[str, dict[str, dict[str, float]]]:
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for scorer in scorers:
        metrics.setdefault(scorer.head, {})[scorer.mode] = scorer.summary(score)
    return metrics


def _accumulate(sums: dict[str, tuple[float, int]], out: dict[str, torch.Tensor], count: int) -> None:
    for key, value in out.items():
        total, seen = sums.get(key, (0.0, 0))
        sums[key] = (total + float(value) * count, seen + count)


def _means(sums: dict[str, tuple[float, int]]) -> dict[str, float]:
    return {key: total / max(1, seen) for key, (total, seen) in sums.items()}
