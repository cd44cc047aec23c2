"""Per-stage CPU time and bytes of a pipeline run stage by stage on one thread (``data_plane``).

A stage is timed with the calling thread's CPU clock (``time.thread_time_ns``): what one core
spends, which is the figure a node is sized by, and blind to time spent waiting (a page-cache read
is CPU; a network wait is not). Stages run on the timing thread only (torch with one thread), so
the stages of a run sum to its whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class StageTotals:
    cpu_ns: int = 0
    wall_ns: int = 0
    nbytes: int = 0  # what the stage moved: read, decoded or copied
    calls: int = 0


class StageTimer:
    """Totals per stage name, in the order the stages were first met."""

    def __init__(self) -> None:
        self.stages: dict[str, StageTotals] = {}

    @contextmanager
    def stage(self, name: str, nbytes: int = 0) -> Iterator[None]:
        totals = self.stages.setdefault(name, StageTotals())
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        try:
            yield
        finally:
            totals.cpu_ns += time.thread_time_ns() - cpu
            totals.wall_ns += time.perf_counter_ns() - wall
            totals.nbytes += nbytes
            totals.calls += 1

    def add_bytes(self, name: str, nbytes: int) -> None:
        """Bytes a stage moved that are known only once it has run (a decoded size)."""
        self.stages.setdefault(name, StageTotals()).nbytes += nbytes

    def cpu_ms_per_sample(self, samples: int) -> dict[str, float]:
        return {name: totals.cpu_ns / 1e6 / samples for name, totals in self.stages.items()}

    def bytes_per_sample(self, samples: int) -> dict[str, float]:
        return {name: totals.nbytes / samples for name, totals in self.stages.items()}

    def total_cpu_ms(self, names: list[str] | None = None) -> float:
        picked = self.stages if names is None else {n: self.stages[n] for n in names}
        return sum(totals.cpu_ns for totals in picked.values()) / 1e6


def cores_per_thousand(cpu_ms_per_sample: float) -> float:
    """Cores kept busy by 1,000 samples/s at ``cpu_ms_per_sample`` of one core each."""
    return cpu_ms_per_sample * 1000 / 1000
