"""A tune's progress on the driver: one bar of trials done, with how many run, stopped early or
failed, and a line as each trial ends. Tune's own status tables stay off unless verbose."""

from __future__ import annotations

import logging
import math

from ray import tune

from vfmkd_ray.progress import Bar

log = logging.getLogger(__name__)


class TrialProgress(tune.Callback):
    def __init__(self, num_trials: int, max_epochs: int, metric: str):
        self.num_trials, self.max_epochs, self.metric = num_trials, max_epochs, metric
        self.running: set[str] = set()
        self.done = self.stopped_early = self.failed = 0
        self.bar: Bar | None = None

    def setup(self, **info) -> None:
        self.bar = Bar("tune", self.num_trials, unit="trials", plain=False)
        self._show()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        epochs = int(result.get("epoch", 0))
        early = epochs < self.max_epochs
        self.stopped_early += early
        value = result.get(self.metric, math.nan)
        log.info(
            "trial %s: %d epochs, %s %.4f%s",
            trial.trial_id,
            epochs,
            self.metric,
            value,
            " (stopped early by ASHA)" if early else "",
        )
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.failed += 1
        log.warning(
            "trial %s failed; its error is in %s", trial.trial_id, trial.local_path or "Tune's results"
        )
        self._ended(trial)

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def close(self) -> None:
        """Also after an error or Ctrl-C in Tune: the bar never stays drawn over the error line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _ended(self, trial) -> None:
        self.running.discard(trial.trial_id)
        self.done += 1
        self._show()

    def _show(self) -> None:
        if self.bar is not None:
            status = f"{len(self.running)} running, {self.stopped_early} stopped early, {self.failed} failed"
            self.bar.update(self.done, status)
