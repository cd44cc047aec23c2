"""The search as Tune runs it, rebuilt on every launch from the record (``tune.plan``), never from
Tune's pickled state.

``RecordedSearch`` hands Tune the trials in order and records each as it starts and ends: first the
trials an earlier launch started and did not end (same key and values, so their runs resume from
their own checkpoints), then new ones, from the seeded plan (random, grid) or from Optuna, which is
told every ended trial's curve first (``Searcher.add_evaluated_point``). ``KeyedASHA`` is Ray's
ASHA over the record's trial keys instead of Tune's per-launch trial ids, its rungs seeded with the
curves of the trials earlier launches ran, so a resumed trial is compared with every trial of the
search.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from vfmkd_ray.tune.plan import ENDED, SearchRecord, TrialRecord, key_index, trial_key

log = logging.getLogger(__name__)
TRIAL_KEY, PARAMS = "trial", "params"  # what a Tune trial's config holds
Curve = list[tuple[int, float]]  # (epoch, metric) of every reported epoch


class RecordedSearch(Searcher):
    """Suggests ``{"trial": key, "params": {...}}`` configs and keeps the record current.

    Args:
        record: the search's record; changed in place and written after every change.
        write_record: writes it (``tune.plan.write_record``). Tune's own pickled searcher state
            (``Searcher.save``) is not written: the record is the state.
        curve_of: a trial key -> its curve so far, read from its run's metrics log.
        max_epochs: a trial that trained this many epochs finished; fewer was stopped (ASHA).
        plan: every trial of a random or grid search, in key order; None with ``optuna``.
        optuna: Ray's OptunaSearch over the space, with this search's metric and mode.
    """

    def __init__(
        self,
        record: SearchRecord,
        write_record: Callable[[SearchRecord], None],
        curve_of: Callable[[str], Curve],
        max_epochs: int,
        metric: str,
        mode: str,
        plan: list[dict[str, Any]] | None = None,
        optuna: Searcher | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        if (plan is None) == (optuna is None):
            raise ValueError("a search suggests from a plan or from Optuna, exactly one")
        self.record, self.write_record, self.curve_of = record, write_record, curve_of
        self.max_epochs = max_epochs
        self.plan, self.optuna = plan, optuna
        self.to_resume = [t for t in record.trials if t.status not in ENDED]
        self.next_index = max((key_index(t.key) + 1 for t in record.trials), default=0)
        self.keys: dict[str, str] = {}  # Tune's trial id -> key
        self.from_optuna: set[str] = set()  # Tune trial ids Optuna suggested in this launch
        if optuna is not None:
            for trial in record.trials:
                if trial.status in ENDED:
                    self._tell_optuna(trial, error=False)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.to_resume:
            resumed = self.to_resume.pop(0)
            key, params = resumed.key, resumed.params
        elif self.plan is not None:
            key, params = self._next_planned()
            if key is None:
                return Searcher.FINISHED
        else:
            params = self.optuna.suggest(trial_id)
            if params in (None, Searcher.FINISHED):
                return params
            key, self.next_index = trial_key(self.next_index), self.next_index + 1
            self.from_optuna.add(trial_id)
        self.keys[trial_id] = key
        self.record.set(TrialRecord(key=key, params=params, status="started"))
        self.write_record(self.record)
        return {TRIAL_KEY: key, PARAMS: params}

    def _next_planned(self) -> tuple[str | None, dict[str, Any]]:
        """The plan's next trial after every recorded one (trials are recorded in plan order)."""
        if self.next_index >= len(self.plan):
            return None, {}
        index, self.next_index = self.next_index, self.next_index + 1
        return trial_key(index), self.plan[index]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.from_optuna:
            self.optuna.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.keys.get(trial_id)
        if key is None:
            return
        trial = self.record.by_key()[key]
        epochs = len(self.curve_of(key))
        status = "failed" if error else "finished" if epochs >= self.max_epochs else "stopped"
        trial = trial.model_copy(update={"status": status})
        self.record.set(trial)
        self.write_record(self.record)
        if trial_id in self.from_optuna:
            self.optuna.on_trial_complete(trial_id, result, error)
        elif self.optuna is not None:
            self._tell_optuna(trial, error)

    def _tell_optuna(self, trial: TrialRecord, error: bool) -> None:
        curve = [value for _, value in self.curve_of(trial.key)]
        if not curve and not error:
            return  # nothing to tell: it ended before its first epoch
        self.optuna.add_evaluated_point(
            trial.params, curve[-1] if curve else None, error=error, intermediate_values=curve or None
        )


class KeyedASHA(ASHAScheduler):
    """ASHA whose rungs are keyed by the trial's record key (``config["trial"]``): a trial resumed
    under a new Tune id keeps its place, and ``seed`` enters the curves of earlier launches."""

    def seed(self, key: str, curve: Curve) -> None:
        """Records ``curve`` in the rungs as if Tune had reported it epoch by epoch."""
        assert len(self._brackets) == 1, "tune.scheduler has one bracket: a trial's curve has one home"
        for epoch, value in curve:
            self._brackets[0].on_result(_Keyed(key), epoch, self._metric_op * value)

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, _keyed(trial))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return super().on_trial_result(tune_controller, _keyed(trial), result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, _keyed(trial), result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._trial_info.pop(_keyed(trial).trial_id, None)


class _Keyed(SimpleNamespace):
    """What ASHA reads of a trial: its id, here the record key."""

    def __init__(self, key: str):
        super().__init__(trial_id=key)


def _keyed(trial) -> _Keyed:
    return _Keyed(trial.config[TRIAL_KEY])
