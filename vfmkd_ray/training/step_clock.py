"""What an epoch's training steps cost: time to the first batch, steady throughput, peak memory.

Steady throughput counts the images of every step between the first batch's arrival and the end
of the last step, so it holds each step's compute and every wait for data except the pipeline's
start-up, which ``first_batch_s`` reports apart. The same clock times the plain in-memory loop in
``benchmarks/``, so the two are measured alike.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field


@dataclass
class StepClock:
    started: float = field(default_factory=time.perf_counter)
    first_batch: float | None = None
    last_step: float | None = None
    images: int = 0

    def batch_arrived(self) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()

    def step_done(self, images: int) -> None:
        """Call after the step's results are on the host (a ``float()`` of its loss has synced)."""
        self.images += images
        self.last_step = time.perf_counter()

    @property
    def first_batch_s(self) -> float:
        return (self.first_batch or self.started) - self.started

    @property
    def images_per_s(self) -> float:
        if self.first_batch is None or self.last_step is None or self.last_step <= self.first_batch:
            return 0.0
        return self.images / (self.last_step - self.first_batch)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
