"""A tune's progress on the driver: one bar of trials done, with how many run, stopped early or
failed, and a line as each trial ends. Tune's own status tables stay off unless verbose.

The counts are taken from Tune's list of trials at every event, not added up event by event: a
resumed search (whose restored trials never end again) starts from what its trials already did.
"""

from __future__ import annotations

import logging
import math

from ray import tune

from vfmkd_ray.progress import Bar

log = logging.getLogger(__name__)
ENDED, FAILED, RUNNING = ("TERMINATED", "ERROR"), "ERROR", "RUNNING"  # Tune's trial states


class TrialProgress(tune.Callback):
    """``earlier``: the (ended, stopped early) trials of earlier launches of the search, which this
    launch's Tune does not run again; they count from the start."""

    def __init__(self, num_trials: int, max_epochs: int, metric: str, earlier: tuple[int, int] = (0, 0)):
        self.num_trials, self.max_epochs, self.metric = num_trials, max_epochs, metric
        self.earlier = earlier
        self.bar: Bar | None = None

    def setup(self, **info) -> None:
        self.bar = Bar("tune", self.num_trials, unit="trials", plain=False)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epochs = self._epochs(trial)
        log.info(
            "trial %s: %d epochs, %s %.4f%s",
            _name(trial),
            epochs,
            self.metric,
            (trial.last_result or {}).get(self.metric, math.nan),
            " (stopped early by ASHA)" if epochs < self.max_epochs else "",
        )
        self._show(trials, ended=trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        log.warning("trial %s failed; its error is in %s", _name(trial), trial.local_path or "Tune's results")
        self._show(trials, ended=trial, failed=True)

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def close(self) -> None:
        """Also after an error or Ctrl-C in Tune: the bar never stays drawn over the error line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def status(self, trials, ended=None, failed: bool = False) -> tuple[int, str]:
        """Trials done, and the bar's text: running, stopped early, failed."""
        done = {t.trial_id for t in trials if t.status in ENDED} | ({ended.trial_id} if ended else set())
        errors = {t.trial_id for t in trials if t.status == FAILED} | ({ended.trial_id} if failed else set())
        running = sum(t.status == RUNNING and t.trial_id not in done for t in trials)
        finished = [t for t in trials if t.trial_id in done - errors]
        early = sum(self._epochs(t) < self.max_epochs for t in finished) + self.earlier[1]
        return len(done) + self.earlier[0], f"{running} running, {early} stopped early, {len(errors)} failed"

    def _show(self, trials, ended=None, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.update(*self.status(trials, ended, failed))

    @staticmethod
    def _epochs(trial) -> int:
        return int((trial.last_result or {}).get("epoch", 0))


def _name(trial) -> str:
    """The search's own key of a trial (its run's name under trials/), else Tune's id."""
    return str((getattr(trial, "config", None) or {}).get("trial", trial.trial_id))
