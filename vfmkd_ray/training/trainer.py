"""The training driver, for every combination of heads and KD terms: checks the config, the
dataset and the stores, builds the Ray Data streams and runs one Ray Train ``TorchTrainer`` of the
one worker loop. Launching it again with the same ``name`` and ``storage_path`` resumes from the
latest checkpoint.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from vfmkd_ray import run_config, run_files, run_lease, storage
from vfmkd_ray.batch import DataNeeds
from vfmkd_ray.config import ConfigError, ExperimentConfig
from vfmkd_ray.config_checks import config_warnings, used_teachers
from vfmkd_ray.data.annotation_checks import BadAnnotationError
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import CocoDataset, read_dataset
from vfmkd_ray.data.feature_keys import split_feature_key
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.label_subset import labelled_subset
from vfmkd_ray.data.pipeline import SampleSpec
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.heads.base import TeacherShapes
from vfmkd_ray.locations import check_locations
from vfmkd_ray.models.build import ModelParts, build_model, run_teacher_shapes
from vfmkd_ray.models.from_run import load_frozen_model
from vfmkd_ray.models.teachers.base import RANDOM_WEIGHTS
from vfmkd_ray.openmmlab import OpenMMLabMissing
from vfmkd_ray.ray_errors import find_cause, first_line, raised_in_worker, storage_failure
from vfmkd_ray.ray_session import ensure_ray, require_shared_paths
from vfmkd_ray.storage import StorageError
from vfmkd_ray.store.channel_stats import ChannelStats
from vfmkd_ray.store.phi_s import term_phi_s
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.tracking.resolve import resolve_tracking
from vfmkd_ray.training.augmented_targets import (
    augmentation,
    refuse_stored_features_under_augmentation,
    refuse_views_misuse,
)
from vfmkd_ray.training.data_position import data_position
from vfmkd_ray.training.relay import relayed_lines
from vfmkd_ray.training.state import BestMetricError
from vfmkd_ray.training.step import NonFiniteLossError
from vfmkd_ray.training.streams import build_streams, decode_task_cpus
from vfmkd_ray.training.teacher_stores import (
    RunStores,
    check_store,
    check_stores,
    runs_online_under_augmentation,
    usable_images,
)
from vfmkd_ray.training.worker import train_loop_per_worker

log = logging.getLogger(__name__)
# Errors the product names itself; Ray's wrappers around them are unwrapped.
NAMED_ERRORS = (
    BadImageError,
    BadAnnotationError,
    FeatureStoreError,
    StorageError,
    NonFiniteLossError,
    BestMetricError,
    run_files.RunFileError,
)


@dataclass(frozen=True)
class RunSummary:
    """What a finished training run reports, whatever its heads and terms."""

    run_dir: str
    num_train: int
    num_val: int
    num_bad_samples: int
    steps_per_epoch: int
    history: list[dict[str, float]]
    checkpoint: str | None
    # Written when an epoch improved the validation loss; None otherwise (never a path to nothing).
    best_backbone: tuple[str, str] | None  # safetensors, {"backbone": ...} .pth
    best_model: str | None  # best_model.pth: the whole model and its config
    num_dropped_boxes: int = 0  # degenerate boxes of the dataset's annotations (data.annotation_checks)


class TrainingError(RuntimeError):
    """Training failed for a reason the product can name (after Ray's retries)."""


def run_channel_stats(cfg: ExperimentConfig, stores: RunStores) -> dict[str, dict[str, ChannelStats]]:
    """Per teacher alias, its store's per-channel statistics (``store.channel_stats``): the stored
    teachers', and those of a teacher that runs online under augmentation but has a store."""
    manifests = dict(stores.manifests())
    for alias in stores.live:
        if (
            runs_online_under_augmentation(cfg, alias)
            and (store := check_store(cfg, alias, True)) is not None
        ):
            manifests[alias] = store.manifest
    return {alias: m.channel_stats for alias, m in manifests.items() if m.channel_stats is not None}


def refuse_terms_without_channel_stats(terms: dict, stats: dict[str, dict[str, ChannelStats]]) -> None:
    """A term that standardises its target (``normalize: channel``) needs its teacher's store to
    hold the statistics (``run_channel_stats``): a teacher without a store has none, nor a store made
    before they were kept."""
    for name, term in terms.items():
        if term.normalize != "channel":
            continue
        for key in term.teacher_layers:
            alias, layer = split_feature_key(key)
            if layer not in stats.get(alias, {}):
                raise ValueError(
                    f"distill.terms.{name}.normalize channel standardises by the channel statistics of "
                    f"teacher {alias}'s store, and it has none: no store (the teacher runs live; precompute "
                    "it), or one made before stores kept them (precompute into a fresh store.root); or set "
                    f"distill.terms.{name}.normalize=none"
                )


def run_training(cfg: ExperimentConfig, callbacks=None, tune_trial: dict | None = None) -> RunSummary:
    """Trains the run's model; relaunching with the same name and config resumes.

    The driver holds the run's lease (``run_lease``) while it runs: a second driver of the same run
    is refused. ``tune_trial`` (a Tune trial's ``parent_id`` tracker run and ``searched`` values): the
    run is one trial of a search, whose driver holds the search's lease and shows its progress; the
    trial's own lines go to Ray's logs.
    """
    cfg.s3.apply()
    check_locations(cfg, reads=("data.root",), writes=("train.storage_path",), may_read=("store.root",))
    lease = (
        nullcontext()
        if tune_trial is not None
        else run_lease.RunLease(run_files.run_dir_of(cfg), "vfmkd train")
    )
    with lease:
        return _train(cfg, callbacks, tune_trial)


def _train(cfg: ExperimentConfig, callbacks, tune_trial: dict | None) -> RunSummary:
    for line in config_warnings(cfg):
        log.warning("config: %s", line)
    cfg = _workers_see_absolute_paths(cfg)
    dataset = read_dataset(cfg.data)
    shapes = run_teacher_shapes(cfg)
    parts = check_model(cfg, shapes)
    check_labels(cfg, dataset, parts)
    # Before the stores are read: a store made for other targets fails there with a vaguer line.
    refuse_views_misuse(cfg, [a for a in used_teachers(cfg) if not runs_online_under_augmentation(cfg, a)])
    stores = check_stores(cfg, dataset.records)
    refuse_stored_features_under_augmentation(cfg, list(stores.manifests()))
    channel_stats = run_channel_stats(cfg, stores)
    refuse_terms_without_channel_stats(parts.terms, channel_stats)
    if tune_trial is not None and cfg.data.augment.pipeline != "none":
        # A trial has no data position, which is where the decode stage learns the epoch.
        raise ValueError(
            "data.augment.pipeline is not available in a Tune trial yet (its decode stage cannot tell "
            "the epochs apart): tune with pipeline none"
        )
    run_dir = run_files.run_dir_of(cfg)
    for change in run_config.claim_resolved_config(run_dir, cfg, run_files.has_checkpoints(run_dir)):
        log.info("resuming %s with %s", run_dir, change)
    bad_samples = BadSampleLog(storage.join(run_dir, run_files.BAD_SAMPLES_DIR))
    labelled = labelled_subset(dataset.records, cfg.data.val_fraction, cfg.data.label_fraction)
    if cfg.data.label_fraction < 1.0:
        log.info(
            "data.label_fraction %g: %d of %d images (the validation split whole)",
            cfg.data.label_fraction,
            len(labelled),
            len(dataset.records),
        )
    images = usable_images(cfg, stores, labelled, bad_samples)
    num_val = sum(is_validation(i, cfg.data.val_fraction) for i in images.ids)
    num_train = len(images.ids) - num_val
    steps_per_epoch = steps_per_epoch_for(cfg, num_train * cfg.data.repeat, num_val)
    low, high = cfg.train.worker_bounds()
    for orphan in run_files.remove_unregistered_checkpoints(run_dir):
        log.warning("removed %s: a checkpoint Ray never registered (its worker died while reporting)", orphan)
    ensure_ray(local_cpus_needed(cfg))
    require_shared_paths(cfg)
    log.info(
        "train %s: %d train%s / %d val images, %d steps per epoch%s; heads %s, terms %s, stored teachers "
        "%s, live teachers %s",
        run_dir,
        num_train,
        f" (x{cfg.data.repeat} per epoch)" if cfg.data.repeat > 1 else "",
        num_val,
        steps_per_epoch,
        f" at {high} workers (elastic {low}-{high}: recomputed on every resize)" if low < high else "",
        list(parts.heads) or "none",
        list(parts.terms) or "none",
        list(stores.manifests()) or "none",
        list(stores.live) or "none",
    )
    needs = parts.needs
    spec = SampleSpec(
        cfg.input_size,
        cfg.store.augment,
        needs.max_objects,
        needs.max_masks,
        augmentation(cfg, needs.max_objects),
    )
    skip_log = bad_samples if cfg.data.on_bad_sample == "skip" else None
    plan = {
        "run_dir": run_dir,
        "train_samples": num_train * cfg.data.repeat,
        "teacher_shapes": {a: {k: list(v) for k, v in layers.items()} for a, layers in shapes.items()},
        "codecs": {alias: m.codec for alias, m in stores.manifests().items()},
        "channel_stats": {
            alias: {layer: [stats.mean, stats.std] for layer, stats in layers.items()}
            for alias, layers in channel_stats.items()
        },
        "phi_s": term_phi_s(cfg, parts.terms),
        "live": list(stores.live),
        "tracking": tune_trial or {},
    }
    # A Tune trial's epochs are its unit: no in-epoch checkpoints, so no data position either.
    with (
        nullcontext() if tune_trial is not None else relayed_lines() as relay,
        nullcontext() if tune_trial is not None else data_position() as position,
    ):
        cluster_cpus = None if tune_trial is not None else ray.cluster_resources().get("CPU", 0.0)
        decode_cpus = decode_task_cpus(cfg, cluster_cpus)
        streams = build_streams(
            cfg, stores, images, dataset, spec, skip_log, position, decode_cpus=decode_cpus
        )
        loop_config = {
            "plan": plan | {"read_bytes": streams.read_bytes},
            "relay": relay,
            "position": position,
        }
        trainer = torch_trainer(cfg, train_loop_per_worker, loop_config, streams.datasets, callbacks)
        result = fit(trainer, run_dir, NAMED_ERRORS)
    # With the images the annotations left out and the boxes they dropped, found by the reader.
    num_bad = bad_samples.write_jsonl(storage.join(run_dir, run_files.BAD_SAMPLES_JSONL), dataset.bad_samples)
    if num_bad:
        log.warning(
            "%d samples were skipped; see %s", num_bad, storage.join(run_dir, run_files.BAD_SAMPLES_JSONL)
        )
    # Written when an epoch improved the validation loss: never a path to a file not written.
    backbone = tuple(
        run_files.path(run_dir, n) for n in (run_files.BEST_BACKBONE_SAFETENSORS, run_files.BEST_BACKBONE_PTH)
    )
    model = run_files.path(run_dir, run_files.BEST_MODEL)
    return RunSummary(
        run_dir=run_dir,
        num_train=num_train,
        num_val=num_val,
        num_bad_samples=num_bad,
        num_dropped_boxes=dataset.num_dropped_boxes,
        steps_per_epoch=steps_per_epoch,
        history=run_files.read_metrics_log(run_dir),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        best_backbone=backbone if all(storage.exists(uri) for uri in backbone) else None,
        best_model=model if storage.exists(model) else None,
    )


def check_model(cfg: ExperimentConfig, shapes: TeacherShapes) -> ModelParts:
    """Builds the model on the meta device against the student's levels and the teachers' layers,
    so a bad term or head fails before any Ray work; heads check what they load themselves (a
    teacher run) here too."""
    try:
        with torch.device("meta"):
            parts = build_model(cfg, shapes, load_weights=False, load_run_model=load_frozen_model)
        for head in parts.heads.values():
            head.check()
    except (ValueError, OpenMMLabMissing) as err:
        raise ConfigError(str(err)) from None
    return parts


def check_labels(cfg: ExperimentConfig, dataset: CocoDataset, parts: ModelParts) -> None:
    """Heads and terms that read ground truth need a labelled dataset, and a head that predicts
    classes as many as it has categories. One whose targets the dataset lacks altogether (no usable
    box, or no segmentation for a mask head) would train on empty targets: warned here, once."""
    if parts.needs.max_objects and not dataset.categories:
        configs = [*cfg.heads.items(), *cfg.distill.terms.items()]
        box_readers = [name for name, config in configs if config.reads().boxes]
        raise ConfigError(
            f"{box_readers} read ground-truth boxes, but {dataset.source} has no categories "
            "(data.annotations: a COCO file with boxes, and masks for sam_mask heads)"
        )
    for name, head_cfg in cfg.heads.items():
        wanted = head_cfg.reads().classes
        if wanted is not None and wanted != len(dataset.categories):
            raise ConfigError(
                f"heads.{name}.num_classes is {wanted} but {dataset.source} has {len(dataset.categories)} "
                "categories: set it to match"
            )
    readers: dict[str, DataNeeds] = {f"heads.{n}": head.needs() for n, head in parts.heads.items()}
    readers |= {f"distill.terms.{n}": term.needs() for n, term in parts.terms.items()}
    num_boxes, num_masks = dataset.num_boxes, dataset.num_masks
    for reader, needs in readers.items():
        if needs.max_objects and not num_boxes:
            log.warning(
                "%s reads ground-truth boxes, but %s has no usable box (%d crowd annotations, which "
                "are left out): it trains on empty targets",
                reader,
                dataset.source,
                dataset.num_crowd,
            )
        if needs.max_masks and not num_masks:
            log.warning(
                "%s reads instance masks, but no usable annotation of %s has a segmentation: it "
                "trains on empty masks",
                reader,
                dataset.source,
            )


def _workers_see_absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Workers do not share the driver's working directory (nor its environment): the teacher
    weights, the files heads load and the tracking location become absolute."""
    teachers = {
        alias: t
        if t.weights in (None, RANDOM_WEIGHTS)
        else t.model_copy(update={"weights": storage.absolute(t.weights)})
        for alias, t in cfg.teachers.items()
    }
    heads = {name: head.with_files(storage.absolute) for name, head in cfg.heads.items()}
    terms = {name: term.with_files(storage.absolute) for name, term in cfg.distill.terms.items()}
    distill = cfg.distill.model_copy(update={"terms": terms})
    tracking = resolve_tracking(cfg.tracking)
    return cfg.model_copy(
        update={"teachers": teachers, "heads": heads, "distill": distill, "tracking": tracking}
    )


def steps_per_epoch_for(cfg: ExperimentConfig, num_train: int, num_val: int) -> int:
    """At the most workers the run may have (an elastic group recomputes it for its size)."""
    workers = cfg.train.max_workers
    per_step = cfg.train.batch_size * workers
    if num_train < per_step:
        raise ValueError(
            f"the train split streams {num_train} images per epoch (its images x data.repeat), fewer than "
            "train.batch_size x train.num_workers "
            f"= {per_step}: lower the batch size or the worker count"
        )
    if num_val < workers:
        raise ValueError(
            f"the validation split has {num_val} images, fewer than train.num_workers = "
            f"{workers} (every worker validates an equal share): raise data.val_fraction "
            f"({cfg.data.val_fraction})"
        )
    return num_train // per_step


def torch_trainer(cfg: ExperimentConfig, loop, loop_config: dict, datasets, callbacks=None) -> TorchTrainer:
    """The ``TorchTrainer`` of a run: scaling, failure and checkpoint settings from ``cfg.train``;
    ``name`` + ``storage_path`` make a relaunch resume. ``callbacks`` (Tune's report callback)
    see every reported epoch."""
    return TorchTrainer(
        loop,
        train_loop_config={"experiment": cfg.model_dump(mode="json"), **loop_config},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
            elastic_resize_monitor_interval_s=cfg.train.elastic_resize_interval_s,
        ),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=storage.absolute(cfg.train.storage_path),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.num_checkpoints_to_keep),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )


def fit(trainer: TorchTrainer, run_dir: str, named_errors: tuple[type[Exception], ...]) -> ray.train.Result:
    """Runs ``trainer``; an error the product can name comes back as itself, not as Ray's wrapper,
    and a storage error Ray raised itself (its controller writing the run state, its checkpoint
    reads) as a ``StorageError`` naming the URI and the cause."""
    try:
        return trainer.fit()
    except Exception as err:
        cause = find_cause(err, named_errors)
        if cause is not None:
            raise type(cause)(str(cause)) from None
        if (failure := storage_failure(err, run_dir)) is not None:
            raise failure from None
        # Ray's text carries remote tracebacks: what the worker raised here, the rest in the log file.
        raise TrainingError(
            f"training run {run_dir} failed: {raised_in_worker(err) or first_line(err)}"
        ) from err


def local_cpus_needed(cfg: ExperimentConfig) -> float:
    """Logical CPUs a local Ray needs: the Train workers plus room for the read/decode tasks."""
    return cfg.train.max_workers * cfg.train.cpus_per_worker + 2
