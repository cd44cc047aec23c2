"""What rank 0 keeps of a run besides its checkpoints and best model: the run's curves
(``curves.png``, refreshed after every epoch) and the experiment tracker's copy of the run. Other
ranks keep nothing; the loop calls the same methods on every rank."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from vfmkd_ray import run_files
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.run_report.curves import CurvesPainter
from vfmkd_ray.tracking.run_tracker import RunTracker
from vfmkd_ray.training.relay import WorkerLines

ATTACHED = [run_files.CURVES_PNG, run_files.BEST_BACKBONE_SAFETENSORS]  # the tracker's artifacts


class RankZeroOutputs:
    def __init__(self, cfg: ExperimentConfig, run_dir: str, tracking: dict, lines: WorkerLines):
        def warn(text: str) -> None:
            lines.say(text, logging.WARNING)

        self.painter = CurvesPainter(lambda png: run_files.write_curves(run_dir, png), cfg.name, warn)
        self.tracker = RunTracker(
            cfg,
            run_dir,
            warn,
            parent_id=tracking.get("parent_id"),
            searched=tracking.get("searched"),
            background=True,
        )

    def after_epoch(self, history: list[dict[str, float]], record: dict[str, float]) -> None:
        self.painter.refresh(history)
        self.tracker.epoch(record)

    def finish(self, ok: bool) -> None:
        self.painter.close()
        if ok:
            self.tracker.attach(ATTACHED)
        self.tracker.finish("FINISHED" if ok else "FAILED")


class _NothingKept:
    def after_epoch(self, history: list[dict[str, float]], record: dict[str, float]) -> None:
        pass


@contextmanager
def rank_zero_outputs(
    rank: int, cfg: ExperimentConfig, run_dir: str, tracking: dict, lines: WorkerLines
) -> Iterator[RankZeroOutputs | _NothingKept]:
    """For the epochs of the block; a failure ends the tracker's run as FAILED and is raised."""
    if rank != 0:
        yield _NothingKept()
        return
    outputs = RankZeroOutputs(cfg, run_dir, tracking, lines)
    try:
        yield outputs
    except BaseException:
        outputs.finish(ok=False)
        raise
    outputs.finish(ok=True)
