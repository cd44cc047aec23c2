"""``vfmkd transfer``: every cell of the grid as one Ray Train fine-tune (through the same
``run_training`` as ``vfmkd train``) scored by ``run_eval`` on the validation split, one after the
other on the same Ray, each using the run's ``train.num_workers``.

A cell records its outcome in its run directory (``run_files.TRANSFER_CELL``) with the fingerprint
of its config: a relaunch reuses the cells that finished with the same config, retries the failed
ones and resumes an interrupted one from its last checkpoint. A failed cell is reported as failed,
never dropped; the report is rewritten after every cell.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from vfmkd_ray import run_files, run_lease, storage
from vfmkd_ray.config import ConfigError, ExperimentConfig
from vfmkd_ray.data.coco import CocoDataset, read_dataset
from vfmkd_ray.data.label_subset import labelled_subset
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.evaluation.run_eval import EvalResult, run_eval
from vfmkd_ray.locations import check_locations
from vfmkd_ray.models.checkpoint_io import weights_sha256
from vfmkd_ray.ray_errors import first_line, was_interrupted
from vfmkd_ray.training.trainer import run_training, steps_per_epoch_for
from vfmkd_ray.transfer.cells import (
    Backbone,
    Cell,
    cell_config,
    fingerprint,
    grid,
    parse_backbones,
    transfer_dir,
)
from vfmkd_ray.transfer.probe import count_probe
from vfmkd_ray.transfer.report import TRANSFER_CSV, TRANSFER_MD, TRANSFER_PNG, table_metrics, write_report
from vfmkd_ray.transfer.statistics import CellScore, group_scores

log = logging.getLogger(__name__)
CELLS_DIR = "cells"


@dataclass(frozen=True)
class TransferSummary:
    directory: str
    num_cells: int
    num_failed: int
    num_reused: int
    table: str  # transfer.md
    files: tuple[str, ...]


def run_transfer(cfg: ExperimentConfig, backbone_specs: list[str]) -> TransferSummary:
    backbones = parse_backbones(backbone_specs)
    spec = cfg.transfer
    if spec.baseline not in {b.name for b in backbones}:
        raise ConfigError(
            f"transfer.baseline {spec.baseline!r} is not among --backbones {[b.name for b in backbones]}"
        )
    cfg.s3.apply()
    check_locations(cfg, reads=("data.root",))
    backbones = [_hashed(b) for b in backbones]
    if cfg.data.label_fraction != 1.0 or cfg.train.freeze_backbone:
        log.warning(
            "config: data.label_fraction=%g and train.freeze_backbone=%s are not used: each cell sets its "
            "own from transfer.label_fractions and transfer.modes",
            cfg.data.label_fraction,
            cfg.train.freeze_backbone,
        )
    directory = transfer_dir(cfg)
    cells_dir = storage.join(directory, CELLS_DIR)
    by_name = {b.name: b for b in backbones}
    cells = grid(cfg, backbones)
    configs = {cell: cell_config(cfg, by_name[cell.backbone], cell, cells_dir) for cell in cells}
    check_locations(configs[cells[0]], writes=("train.storage_path",))  # the cells' directory
    with run_lease.RunLease(directory, "vfmkd transfer"):
        return _run_grid(cfg, directory, backbones, cells, configs)


def _run_grid(
    cfg: ExperimentConfig,
    directory: str,
    backbones: list[Backbone],
    cells: list[Cell],
    configs: dict[Cell, ExperimentConfig],
) -> TransferSummary:
    spec = cfg.transfer
    dataset = read_dataset(cfg.data)
    for cell_cfg in configs.values():
        _check_split_sizes(cell_cfg, dataset)
    _check_earlier_cells(configs)
    probes = _probes(configs, backbones, dataset)
    log.info(
        "transfer %s: %d cells (%d backbones x %d modes x %d label fractions x %d seeds)",
        directory,
        len(cells),
        len(backbones),
        len(spec.modes),
        len(spec.label_fractions),
        len(spec.seeds),
    )
    scores: list[CellScore] = []
    reused = 0
    for number, cell in enumerate(cells, 1):
        score, was_done = _run_cell(configs[cell], cell, f"cell {number}/{len(cells)} {cell.name}")
        reused += was_done
        scores.append(score)
        table = _report(cfg, directory, backbones, scores, probes)
    failed = sum(not s.ok for s in scores)
    files = tuple(storage.join(directory, name) for name in (TRANSFER_CSV, TRANSFER_MD, TRANSFER_PNG))
    return TransferSummary(directory, len(cells), failed, reused, table, files)


def _check_earlier_cells(configs: dict[Cell, ExperimentConfig]) -> None:
    """Before anything runs: a cell an earlier launch started (finished, failed or interrupted) with
    another config is refused, rather than reused or resumed from that config's checkpoints."""
    for cell_cfg in configs.values():
        run_dir = run_files.run_dir_of(cell_cfg)
        before = run_files.read_transfer_cell(run_dir)
        if before is not None and before.get("fingerprint") != (expected := fingerprint(cell_cfg)):
            raise ConfigError(
                f"{run_dir} was {before.get('status', 'started')} with another config than this launch's "
                f"(fingerprint {before.get('fingerprint')} != {expected}): set transfer.storage_path to "
                "a new directory, or delete that cell to run it again"
            )


def _run_cell(cell_cfg: ExperimentConfig, cell: Cell, label: str) -> tuple[CellScore, bool]:
    """The cell's score and whether it was reused from an earlier launch."""
    run_dir = run_files.run_dir_of(cell_cfg)
    before = run_files.read_transfer_cell(run_dir)
    if before is not None and before.get("status") == "ok":
        log.info("%s: done before, reused", label)
        return _score(cell, True, before.get("metrics") or {}, None), True
    outcome = {"cell": cell.key(), "status": "running", "fingerprint": fingerprint(cell_cfg)}
    run_files.write_transfer_cell(run_dir, outcome)
    started = time.monotonic()
    log.info("%s: fine-tuning (%d epochs)", label, cell_cfg.train.epochs)
    try:
        run_training(cell_cfg)
        metrics = flat_metrics(run_eval(cell_cfg))
        ok, error = True, None
    except (ValueError, OSError, RuntimeError) as err:  # the product's named errors and Ray's
        if was_interrupted(err):  # Ctrl-C reached the workers before this process
            raise KeyboardInterrupt from err
        metrics, ok, error = {}, False, first_line(err)
        log.warning("%s: FAILED: %s", label, error)
    seconds = time.monotonic() - started
    outcome |= {"status": "ok" if ok else "failed", "metrics": metrics, "error": error, "seconds": seconds}
    run_files.write_transfer_cell(run_dir, outcome)
    if ok:
        log.info("%s: %s (%.0fs)", label, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), seconds)
    return _score(cell, ok, metrics, error), False


def flat_metrics(result: EvalResult) -> dict[str, float]:
    """``<head>/<metric>`` (``<head>.<mode>/<metric>`` for heads scored in several modes)."""
    flat = {}
    for head, modes in result.heads.items():
        for mode, metrics in modes.items():
            prefix = head if len(modes) == 1 else f"{head}.{mode}"
            flat |= {
                f"{prefix}/{name}": float(value) for name, value in metrics.items() if name != "instances"
            }
    return flat


def _hashed(backbone: Backbone) -> Backbone:
    if backbone.uri is None:
        return backbone
    try:
        return Backbone(backbone.name, backbone.uri, weights_sha256(backbone.uri))
    except FileNotFoundError:
        raise ConfigError(
            f"--backbones {backbone.name}: {backbone.uri} does not exist (key=value overrides go before "
            "--backbones)"
        ) from None


def _check_split_sizes(cell_cfg: ExperimentConfig, dataset: CocoDataset) -> None:
    """A label budget too small for the batch size fails here, before any cell runs."""
    data = cell_cfg.data
    records = labelled_subset(dataset.records, data.val_fraction, data.label_fraction)
    num_val = sum(is_validation(r.image_id, data.val_fraction) for r in records)
    try:
        steps_per_epoch_for(cell_cfg, (len(records) - num_val) * data.repeat, num_val)
    except ValueError as err:
        raise ConfigError(
            f"transfer cell {cell_cfg.name} (label fraction {data.label_fraction:g}): {err}"
        ) from None


def _score(cell: Cell, ok: bool, metrics: dict, error: str | None) -> CellScore:
    clean = {k: float("nan") if v is None else float(v) for k, v in metrics.items()}
    return CellScore(cell.backbone, cell.mode, cell.label_fraction, cell.seed, ok, clean, error)


def _probes(
    configs: dict[Cell, ExperimentConfig], backbones: list[Backbone], dataset: CocoDataset
) -> dict[str, float | None]:
    """The count probe of each backbone as it starts, before any fine-tune."""
    first = {}
    for cell, cell_cfg in configs.items():
        first.setdefault(cell.backbone, cell_cfg)
    probes = {}
    for backbone in backbones:
        probe_cfg = first[backbone.name].model_copy(update={"seed": 0})
        try:
            probes[backbone.name] = count_probe(probe_cfg, dataset)
        except ValueError as err:  # e.g. weights of another architecture
            raise ConfigError(f"--backbones {backbone.name}: {err}") from None
    return probes


def _report(
    cfg: ExperimentConfig,
    directory: str,
    backbones: list[Backbone],
    scores: list[CellScore],
    probes: dict[str, float | None],
) -> str:
    spec = cfg.transfer
    metrics = spec.metrics or table_metrics(scores)
    groups = group_scores(scores, metrics, spec.baseline)
    notes = [f"- `{b.name}`: {b.describe()}" for b in backbones]
    notes += [
        "",
        f"Fine-tunes of heads {list(cfg.heads)} on `{cfg.data.root}` without any teacher; modes "
        f"{spec.modes}, label fractions {spec.label_fractions} of the training split (a fixed subset per "
        f"fraction), seeds {spec.seeds}; {spec.epochs or cfg.train.epochs} epochs"
        + (", the subset streamed 1/fraction times per epoch (about equal steps)" if spec.equal_steps else "")
        + "; scored on the validation split (the best-validation-loss epoch).",
    ]
    if any(p is not None for p in probes.values()):
        notes += ["", "| backbone | count probe R² (before fine-tuning) |", "|---|---|"]
        notes += [f"| {name} | {'n/a' if r is None else f'{r:.4f}'} |" for name, r in probes.items()]
    return write_report(
        directory, f"vfmkd transfer: {cfg.name}", scores, groups, metrics, spec.baseline, notes
    )
