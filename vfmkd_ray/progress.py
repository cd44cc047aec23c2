"""Live progress of long work: precompute, training epochs, eval, tune trials.

A bar is drawn with ``rich`` on the person's console (the one product lines use, so a line logged
while a bar is drawn lands above it) and removed when done: what stays on screen are the product's
own lines. Where no bar can be drawn (output to a file or pipe, a Ray job's log, ``--verbose`` with
Ray writing to the same terminal) a plain line is logged at every tenth of the work instead, or
nothing when the caller's own lines already tell the progress (training's epoch lines).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vfmkd_ray import console

log = logging.getLogger(__name__)
PLAIN_STEPS = 10  # plain lines per bar where no bar can be drawn


class Bar:
    """One unit of long work: ``update`` with the amount done so far and a short status text;
    with ``show_rate`` the status starts with the units per second since the bar began."""

    def __init__(self, label: str, total: int, unit: str, plain: bool, show_rate: bool = False):
        self.label, self.total, self.unit, self.plain = label, max(0, total), unit, plain
        self.show_rate, self.started = show_rate, time.monotonic()
        self.done = 0
        self._plain_step = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        shown = console.current()
        if shown.rich.is_terminal and not shown.verbose:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=shown.rich,
                transient=True,
                # rich would swap sys.stdout/sys.stderr for its own while drawing: results and
                # Ray's messages to stderr (the log file) would land on the terminal.
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._task = self._progress.add_task(label, total=self.total or None, status="")
            self._progress.start()

    def update(self, done: int, status: str = "") -> None:
        self.done = done
        if self.show_rate:
            rate = f"{done / max(time.monotonic() - self.started, 1e-9):.1f} {self.unit}/s"
            status = f"{rate}{_sep(status)}"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, status=status)
            return
        if not self.plain or not self.total:
            return
        reached = min(PLAIN_STEPS, done * PLAIN_STEPS // self.total)
        if reached > self._plain_step:
            self._plain_step = reached
            percent = 100 * done // self.total
            log.info("%s: %d/%d %s (%d%%)%s", self.label, done, self.total, self.unit, percent, _sep(status))

    def restart(self, label: str, total: int) -> None:
        """The same bar for the next unit of work (training's next epoch)."""
        self.label, self.total, self.done, self._plain_step = label, max(0, total), 0, 0
        if self._progress is not None and self._task is not None:
            self._progress.reset(self._task, total=self.total or None, description=label, status="")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextmanager
def progress_bar(
    label: str, total: int, unit: str = "images", plain: bool = True, show_rate: bool = False
) -> Iterator[Bar]:
    """A bar for the duration of the block; ``plain``: log tenths where no bar can be drawn."""
    bar = Bar(label, total, unit, plain, show_rate)
    try:
        yield bar
    finally:
        bar.close()


def _sep(status: str) -> str:
    return f", {status}" if status else ""
