"""Where an epoch's data stands, so a run restored from a checkpoint inside an epoch neither repeats
nor skips samples, and the steps a failure made the run repeat are counted.

Ray Data's streaming split hands blocks to whichever worker asks first, so a step count alone does
not say which rows are left. Instead an in-epoch checkpoint lists the ``sample_key`` of every row
trained on so far in the epoch; after a restart rank 0 puts that list in a small actor owned by the
driver, and the training streams' decode stage (``data.pipeline.TrainSampleDecoder``) drops those
rows for the rest of the epoch. At the epoch's end the list is cleared. Rank 0 also posts each step
it reaches, so a restore can count the steps done again since the checkpoint it resumed from (the
last post before a kill may be lost: the count is at most that short). And the actor knows the epoch
rank 0 last started: the training streams order each pass by it (``training.streams``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import ray

from vfmkd_ray.ray_session import on_this_node


@ray.remote(num_cpus=0)
class _Position:
    def __init__(self) -> None:
        self._trained: frozenset[int] = frozenset()
        self._reached: dict[int, int] = {}  # epoch -> the furthest step rank 0 reached in it
        self._repeated = 0
        self._epoch = 0  # the epoch rank 0 last started: the one the training stream's passes read

    def resume(self, epoch: int, step: int, trained: list[int]) -> int:
        """The epoch restarts at ``step`` having trained on ``trained``; returns the steps repeated
        in all so far."""
        self._trained = frozenset(trained)
        self._epoch = epoch
        self._repeated += max(0, self._reached.get(epoch, 0) - step)
        self._reached[epoch] = step
        return self._repeated

    def reached(self, epoch: int, step: int) -> None:
        self._reached[epoch] = max(step, self._reached.get(epoch, 0))

    def end_epoch(self) -> int:
        self._trained = frozenset()
        return self._repeated

    def trained(self, keys: list[int]) -> list[int]:
        return [key for key in keys if key in self._trained] if self._trained else []

    def epoch(self) -> int:
        return self._epoch


class DataPosition:
    """A picklable handle on the run's position actor, for decode tasks and workers."""

    def __init__(self, actor: Any):
        self.actor = actor

    def trained(self, keys: Iterable[int]) -> frozenset[int]:
        """Those of ``keys`` the interrupted epoch already trained on."""
        return frozenset(ray.get(self.actor.trained.remote(list(keys))))

    def resume(self, epoch: int, step: int, trained: list[int]) -> int:
        return ray.get(self.actor.resume.remote(epoch, step, trained))

    def reached(self, epoch: int, step: int) -> None:
        self.actor.reached.remote(epoch, step)  # not waited for: once per step

    def end_epoch(self) -> int:
        return ray.get(self.actor.end_epoch.remote())

    def epoch(self) -> int:
        """The epoch (0-based) rank 0 last started; 0 before the first."""
        return ray.get(self.actor.epoch.remote())


@contextmanager
def data_position() -> Iterator[DataPosition]:
    """The run's position actor, for the time of the block."""
    actor = _Position.options(**on_this_node()).remote()
    try:
        yield DataPosition(actor)
    finally:
        with suppress(Exception):  # Ray may be down with the run: the run's own error says why
            ray.kill(actor)
