"""Checks across config sections: what references what, and which settings have no effect.

Kept apart from the schema (``config.py``) so the rules read as one list. ``check_references``
runs inside validation (errors); ``config_warnings`` is called by the drivers, which log each
line as a warning (a setting that silently does nothing, or silently costs quality, is a bug
report waiting to happen). What a head or term refers to comes from its config's declaration
(``reads.Reads``), never from its type or field names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vfmkd_ray.config_yaml import clip, echo
from vfmkd_ray.reads import ReaderConfig

if TYPE_CHECKING:
    from vfmkd_ray.config import ExperimentConfig

# Old keys and where they went, for configs written before heads existed.
MIGRATION = (
    "the detector is now a head: neck: {type: stride4, channels: <detection.neck_channels>} and "
    "heads: {det: {type: yolc, num_classes: ..., <the other detection.* keys>, lsm: ..., "
    "max_patches_per_img, min_patch_size, lsm_visualize, kd: {teacher_ckpt, kd_weight_*, "
    "use_teacher_crop, hm_kd, temperature}}}; data.input_size takes detection.input_size; "
    "see configs/yolc_tiny.yaml"
)
OLD_DISTILL_KEYS = {
    "enable", "teacher_ckpt", "kd_weight_global_hm", "kd_weight_global_coarse", "kd_weight_local_refine",
    "use_teacher_crop", "max_patches_per_img", "min_patch_size", "lsm_visualize", "hm_kd", "temperature",
}  # fmt: skip


def migrate_or_refuse(raw: Any) -> Any:
    """``task: features`` (the only behaviour before heads) is dropped; the detection keys of old
    configs are refused with where they moved."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    task = raw.pop("task", None)
    if task not in (None, "features"):
        raise ValueError(f"task: {clip(str(task))} is gone: {MIGRATION}")
    if "detection" in raw:
        raise ValueError(f"the detection section is gone: {MIGRATION}")
    old = sorted(OLD_DISTILL_KEYS & set(raw.get("distill") or {}))
    if old:
        raise ValueError(f"distill.{old[0]} is gone (YOLC KD settings moved into the yolc head): {MIGRATION}")
    return raw


def readers(cfg: ExperimentConfig) -> list[tuple[str, ReaderConfig]]:
    """Every term and head config with where it sits (``distill.terms.<name>``, ``heads.<name>``),
    terms first."""
    terms = [(f"distill.terms.{clip(name)}", term) for name, term in cfg.distill.terms.items()]
    return terms + [(f"heads.{clip(name)}", head) for name, head in cfg.heads.items()]


def used_teachers(cfg: ExperimentConfig) -> list[str]:
    """The teacher aliases some term or head reads, in config order."""
    primary = next(iter(cfg.teachers), None)
    used = {alias or primary for _, reader in readers(cfg) for alias in reader.reads().teachers.values()}
    return [alias for alias in cfg.teachers if alias in used]


def detection_heads(cfg: ExperimentConfig) -> list[str]:
    """The heads that predict classes (and so boxes): the ones COCO box scores are computed for."""
    return [name for name, head in cfg.heads.items() if head.reads().classes is not None]


def check_references(cfg: ExperimentConfig) -> None:
    """Every alias and term name a section refers to exists; the run trains something."""
    if not cfg.heads and not cfg.distill.terms:
        raise ValueError(
            "nothing to train: configure heads: {...} and/or distill.terms: {...} (there are no default "
            "terms or teachers any more: configs/demo.yaml shows the feature_mse + edge terms against a "
            "sam teacher that were the defaults)"
        )
    if clash := sorted(set(cfg.heads) & set(cfg.distill.terms)):
        raise ValueError(
            f"{clip(str(clash))} name both a head and a distill term: both would log loss/<name>; rename one"
        )
    for where, reader in readers(cfg):
        reads = reader.reads()
        for key, alias in reads.teachers.items():
            if alias is None and not cfg.teachers:
                raise ValueError(f"{where} ({reader.type}) reads a teacher, but teachers is empty")
            if alias is not None and alias not in cfg.teachers:
                raise ValueError(
                    f"{where}.{key} {echo(alias)} is not a configured teacher; "
                    f"teachers: {clip(str(list(cfg.teachers)))}"
                )
        for key, term in reads.terms.items():
            if term not in cfg.distill.terms:
                raise ValueError(
                    f"{where}.{key} {echo(term)} is not a distill.terms name: "
                    f"{clip(str(list(cfg.distill.terms)))}"
                )
    if cfg.data.input_size is None and not cfg.teachers:
        raise ValueError("data.input_size is not set and no teacher gives one: set data.input_size")
    _check_best_metric(cfg)
    if cfg.train.sync_bn:
        for where, reader in readers(cfg):
            if reader.reads().reruns:
                raise ValueError(
                    f"train.sync_bn with {where} ({reader.type}), whose training runs the model again on "
                    "crops on some workers only: SyncBatchNorm there would wait for the others; set "
                    "train.sync_bn false"
                )
    if cfg.train.freeze_backbone:
        for name, term in cfg.distill.terms.items():
            if getattr(term, "adaptive", None) is not None:
                raise ValueError(
                    f"distill.terms.{name}.adaptive steers the weight by the term's share of the "
                    "backbone's gradient, but train.freeze_backbone trains no backbone parameter: "
                    "drop one of them"
                )
    if cfg.data.augment.pipeline != "none":
        for where, reader in readers(cfg):
            if reader.reads().masks:
                raise ValueError(
                    f"{where} reads instance masks, which data.augment.pipeline "
                    f"{cfg.data.augment.pipeline} does not move with the pixels yet: use pipeline none"
                )


def _check_best_metric(cfg: ExperimentConfig) -> None:
    """A COCO score picks the best epoch only from a detection head that is scored."""
    train = cfg.train
    if not train.best_is_box_score():
        return
    head = train.best_metric.partition("/")[0]
    detectors = detection_heads(cfg)
    if head not in detectors:
        raise ValueError(
            f"train.best_metric {echo(train.best_metric)} names no detection head; heads that predict "
            f"boxes: {clip(str(detectors))}"
        )
    if train.eval_every_epochs == 0:
        raise ValueError(
            f"train.best_metric {echo(train.best_metric)} needs COCO scores: train.eval_every_epochs is 0"
        )


def config_warnings(cfg: ExperimentConfig) -> list[str]:
    """Settings that change nothing for this config, or quietly cost quality, one line each."""
    lines = []
    used = set(used_teachers(cfg))
    may_go_online = cfg.distill.online_ratio > 0 or cfg.data.missing_features == "online"
    augmented = cfg.data.augment.pipeline != "none"
    for alias in used:
        online_always = augmented and cfg.teachers[alias].under_augmentation == "online"
        if not (may_go_online or online_always):
            continue
        size = cfg.teachers[alias].input_size
        if size > cfg.input_size:
            lines.append(
                f"teachers.{alias} runs online on the student's {cfg.input_size} px canvas resized to "
                f"{size} px, while its stored features saw the image letterboxed at {size} px: online "
                f"targets are blurrier; set data.input_size={size} or keep every sample stored"
            )
    for alias in cfg.teachers:
        if alias not in used:
            lines.append(f"teachers.{alias} is read by no distill term or head: it is ignored")
        elif not augmented and cfg.teachers[alias].under_augmentation is not None:
            lines.append(f"teachers.{alias}.under_augmentation has no effect: data.augment.pipeline is none")
    if not used and cfg.distill.online_ratio > 0:
        lines.append("distill.online_ratio has no effect: no term or head reads a teacher")
    if (
        cfg.neck is not None
        and not cfg.heads
        and not any(t.student_source == "neck" for t in cfg.distill.terms.values())
    ):
        lines.append(f"neck ({cfg.neck.type}) feeds no head and no term (student_source: neck)")
    for where, reader in readers(cfg):
        lines += [f"{where}.{line}" for line in reader.settings_without_effect()]
    lines += [f"data.{line}" for line in cfg.data.settings_without_effect()]
    augment = cfg.data.augment
    if "eval_every_epochs" in cfg.train.model_fields_set and not detection_heads(cfg):
        lines.append("train.eval_every_epochs has no effect: no head predicts boxes to score")
    if augment.pipeline != "none" and cfg.store.augment == "hflip":
        lines.append(
            f"store.augment {cfg.store.augment} does not apply to training samples under "
            f"data.augment.pipeline {augment.pipeline} (its flip is the pipeline's own)"
        )
    viewed = any(cfg.teachers[a].under_augmentation == "views" for a in used)
    if "view_photometric" in augment.model_fields_set and not (augment.pipeline != "none" and viewed):
        lines.append("data.augment.view_photometric has no effect: no teacher trains on stored views")
    if augment.pipeline == "none" and "close_mosaic_epochs" in augment.model_fields_set:
        lines.append("data.augment.close_mosaic_epochs has no effect: data.augment.pipeline is none")
    elif augment.pipeline != "none" and augment.close_mosaic_epochs >= cfg.train.epochs:
        lines.append(
            f"data.augment.close_mosaic_epochs {augment.close_mosaic_epochs} >= train.epochs "
            f"{cfg.train.epochs}: no epoch uses mosaic"
        )
    lines += [f"train.{line}" for line in cfg.train.settings_without_effect()]
    return lines + _zero_weights(cfg)


def _zero_weights(cfg: ExperimentConfig) -> list[str]:
    """A head or term weighted 0 is computed and logged every step but adds nothing to the loss:
    a leftover of an ablation, or a typo for a small weight."""
    lines = [
        f"heads.{clip(name)}.weight is 0: its loss is computed and logged but trains nothing; remove "
        "the head or give it a weight"
        for name, head in cfg.heads.items()
        if head.weight == 0
    ]
    for name, term in cfg.distill.terms.items():
        if term.weight != 0:
            continue
        through = [where for where, reader in readers(cfg) if name in reader.reads().terms.values()]
        where = f" (its adapter trains only through {', '.join(through)})" if through else ""
        lines.append(
            f"distill.terms.{clip(name)}.weight is 0: its loss is computed and logged but trains "
            f"nothing{where}; remove the term or give it a weight"
        )
    return lines
