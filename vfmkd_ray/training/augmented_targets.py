"""How each stored teacher's target follows the training augmentation (``data.augment`` and
``teachers.<alias>.under_augmentation``): the run's augmentation, and the checks that refuse a run
whose targets would not lie over the student's pixels."""

from __future__ import annotations

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.augment.block import BlockAugmentation
from vfmkd_ray.data.views import VIEW_PIPELINE


def augmentation(cfg: ExperimentConfig, max_objects: int) -> BlockAugmentation | None:
    """``data.augment``'s pipeline for the training streams; None for ``none``."""
    augment = cfg.data.augment
    if augment.pipeline == "none":
        return None
    return BlockAugmentation.yolov8(
        cfg.student.size,
        augment.close_mosaic_epochs,
        cfg.seed,
        cfg.train.epochs,
        cfg.input_size,
        max_objects,
        augment.view_photometric,
    )


def refuse_stored_features_under_augmentation(cfg: ExperimentConfig, stored: list[str]) -> None:
    """A stored teacher map is of the letterboxed image: under mosaic and affine it no longer lies
    over the student's pixels, and its loss would teach the wrong places without a sound, unless the
    teacher says how its target follows the augmentation (``under_augmentation``)."""
    unsaid = [alias for alias in stored if cfg.teachers[alias].under_augmentation is None]
    if cfg.data.augment.pipeline != "none" and unsaid:
        raise ValueError(
            f"data.augment.pipeline {cfg.data.augment.pipeline} moves the student's pixels, but the stored "
            f"features of teachers {unsaid} are of the plain letterboxed image: set "
            f"teachers.{unsaid[0]}.under_augmentation to warp (the stored maps carried into each "
            "sample's canvas, uncovered cells masked), online (the teacher runs in the workers on "
            "every sample) or views (the teacher's maps of augmented canvases, stored by a precompute "
            "with store.augment yolov8)"
        )


def refuse_views_misuse(cfg: ExperimentConfig, stored: list[str]) -> None:
    """Stored views (``under_augmentation: views``) train only where the run's draws are the
    store's: a store of views (``store.augment: yolov8``) under the yolov8 pipeline, every stored
    teacher of the run on its views (a warp of view 0 would mix two kinds of target in one stream),
    and every training image labelled (a view's mosaic partners come from the whole training split).
    """
    augmented = cfg.data.augment.pipeline != "none"
    viewed = [alias for alias in stored if cfg.teachers[alias].under_augmentation == "views"]
    if augmented and viewed and cfg.store.augment != VIEW_PIPELINE:
        raise ValueError(
            f"teachers.{viewed[0]}.under_augmentation views trains on the augmented views a store holds: "
            f"set store.augment={VIEW_PIPELINE} and store.views_per_image (2 or more), and precompute them "
            f"(store.augment is {cfg.store.augment})"
        )
    if not (augmented and cfg.store.augment == VIEW_PIPELINE):
        return
    others = [alias for alias in stored if alias not in viewed]
    if others:
        raise ValueError(
            f"store.augment {VIEW_PIPELINE} trains every stored teacher on its views, but "
            f"teachers.{others[0]}.under_augmentation is {cfg.teachers[others[0]].under_augmentation}: set "
            "it to views (or online)"
        )
    if not viewed:
        return  # every teacher runs online: no stored view is read
    if cfg.data.label_fraction < 1.0:
        raise ValueError(
            f"data.label_fraction {cfg.data.label_fraction} leaves training images unlabelled, and the "
            "stored views' mosaic partners come from the whole training split: train views with "
            "label_fraction 1, or run the teachers online (under_augmentation online)"
        )
    if cfg.data.allow_store_from_other_dataset:
        raise ValueError(
            "data.allow_store_from_other_dataset: a store of views made from another dataset drew its "
            "mosaic partners from that dataset's images: precompute the views from this one"
        )
