"""Where a run is and what it has seen, with the operations that move it: the epochs and optimiser
steps done, the per-epoch records and the best value of ``train.best_metric``, and, inside an
epoch, the position a checkpoint there holds (the steps and samples of the epoch so far, the keys
of those samples, the partial train sums). It is one of the stateful parts every checkpoint saves
(``STATE_PART``), next to the model, optimiser, schedule, scaler and EMA (``training.checkpointing``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

STATE_PART = "counters"  # its name in a checkpoint (the name checkpoints have always used)


class BestMetricError(ValueError):
    """``train.best_metric`` is not in an epoch's record that should hold it (a typo, or a COCO score
    the validation split cannot give): the best files would silently be the latest."""


def lower_is_better(metric: str) -> bool:
    return "loss" in metric


@dataclass
class TrainingState:
    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps, all epochs
    best_metric: str = "val/loss"  # what best_value is a value of
    best_value: float | None = None  # None: no epoch scored yet
    history: list[dict[str, float]] = field(default_factory=list)
    # Of the epoch under way, when a checkpoint was written inside it (all 0/empty at a boundary):
    epoch_step: int = 0  # its steps done
    epoch_samples: int = 0  # the samples those steps trained on, all workers together
    epoch_trained: list[int] = field(default_factory=list)  # their data.pipeline.sample_key values
    epoch_sums: dict[str, list[float]] = field(default_factory=dict)  # train metric -> [sum, count]

    def in_epoch(
        self,
        steps_done: int,
        epoch_step: int,
        samples: int,
        trained: list[int],
        sums: dict[str, tuple[float, float]],
    ) -> TrainingState:
        """The state of the epoch under way after ``steps_done`` steps of this attempt, at its step
        ``epoch_step``, having trained ``samples`` more samples (all workers), the keys ``trained``
        so far and the all-worker train ``sums``: what an in-epoch checkpoint saves."""
        return replace(
            self,
            step=self.step + steps_done,
            epoch_step=epoch_step,
            epoch_samples=self.epoch_samples + samples,
            epoch_trained=list(trained),
            epoch_sums={key: [total, count] for key, (total, count) in sums.items()},
        )

    def finish_epoch(self, steps_done: int, record: dict[str, float], metric: str = "val/loss") -> bool:
        """The epoch under way ended after ``steps_done`` steps of this attempt with ``record``:
        the next starts at its beginning. Returns whether it is the best yet by ``metric`` (lower
        is better for a loss, higher otherwise). An epoch that is not scored (COCO scores every N
        epochs) is not; until the first scored one, every epoch is (the best files then hold the
        latest). A ``metric`` other than the state's own starts the comparison over.

        Raises:
            BestMetricError: the record should hold ``metric`` and does not."""
        self.epoch, self.step = self.epoch + 1, self.step + steps_done
        self.history.append(record)
        self.epoch_step, self.epoch_samples, self.epoch_trained, self.epoch_sums = 0, 0, [], {}
        if metric != self.best_metric:
            self.best_metric, self.best_value = metric, None
        value, best = record.get(metric), self.best_value
        if value is None:
            _check_unscored(metric, record)
            return best is None
        if not math.isfinite(value):
            return best is None
        improved = best is None or (value < best if lower_is_better(metric) else value > best)
        if improved:
            self.best_value = value
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_metric": self.best_metric,
            "best_value": self.best_value,
            "history": self.history,
            "epoch_step": self.epoch_step,
            "epoch_samples": self.epoch_samples,
            # A tensor: weights_only loading takes lists of plain ints too, but 64-bit keys as a
            # tensor cost one object, not one per sample.
            "epoch_trained": torch.tensor(self.epoch_trained, dtype=torch.int64),
            "epoch_sums": self.epoch_sums,
        }

    def load_state_dict(self, counters: dict[str, Any]) -> None:
        self.epoch = int(counters["epoch"])
        self.step = int(counters["step"])
        if "best_metric" in counters:
            best = counters["best_value"]
            self.best_metric, self.best_value = (
                str(counters["best_metric"]),
                None if best is None else float(best),
            )
        else:  # written before train.best_metric: the best validation loss, inf before the first
            best = float(counters["best_val_loss"])
            self.best_metric, self.best_value = "val/loss", best if math.isfinite(best) else None
        self.history = list(counters["history"])
        # Checkpoints written before in-epoch checkpoints existed are all at epoch boundaries.
        self.epoch_step = int(counters.get("epoch_step", 0))
        self.epoch_samples = int(counters.get("epoch_samples", 0))
        trained = counters.get("epoch_trained")
        self.epoch_trained = trained.tolist() if trained is not None else []
        sums = counters.get("epoch_sums", {})
        self.epoch_sums = {key: [float(total), float(count)] for key, (total, count) in sums.items()}


def _check_unscored(metric: str, record: dict[str, float]) -> None:
    """A validation key is in every record; a box head's score in every scored epoch's (one that
    has the head's mAP)."""
    head, _, score = metric.partition("/")
    if metric.startswith("val/"):
        keys = sorted(key for key in record if key.startswith("val/"))
        raise BestMetricError(f"train.best_metric {metric!r} is not a validation key of this run: {keys}")
    if f"{head}/mAP" in record:
        raise BestMetricError(
            f"train.best_metric {metric!r} is not scored on this validation split (pycocotools has no "
            f"{score} for it: no objects of that size?); choose {head}/mAP or {head}/AP50"
        )
