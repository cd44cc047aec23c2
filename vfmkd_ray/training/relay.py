"""Rank 0's lines and step progress, carried to the driver's console.

Ray's own forwarding of worker output (``log_to_driver``) prints every worker's and Ray process's
lines with their prefixes, and cannot draw a bar. Instead rank 0 posts its product lines and step
counts to a small mailbox actor; a thread of the driver takes them about four times a second and
shows them: lines through the product logger, steps as the epoch's bar. So the person (and a
submitted job's log) sees the same lines whatever Ray forwards. Without a mailbox (a Tune trial)
the lines go to the worker's stdout, Ray's session log.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import ray

from vfmkd_ray.progress import Bar
from vfmkd_ray.ray_session import on_this_node

log = logging.getLogger("vfmkd_ray.training")
POLL_S = 0.25
FINAL_WAIT_S = 10.0  # for the events posted before the run ended
STEP_EVERY_S = 0.5  # rank 0 posts its step count at most this often


@ray.remote(num_cpus=0)
class _Mailbox:
    def __init__(self) -> None:
        self._events: list[tuple] = []

    def post(self, event: tuple) -> None:
        self._events.append(event)

    def take(self) -> list[tuple]:
        events, self._events = self._events, []
        return events


class WorkerLines:
    """What rank 0 tells the person; other ranks say nothing."""

    def __init__(self, mailbox: Any | None, rank: int):
        self.mailbox, self.rank = mailbox, rank
        self._last_step = 0.0
        self._steps = 0  # of the epoch under way

    def say(self, text: str, level: int = logging.INFO) -> None:
        if self.rank != 0:
            return
        if self.mailbox is None:
            # The real stdout, which Ray writes to the session log once; Ray Train's patched print
            # would tee the line through its logger as well.
            print(f"[vfmkd train] {text}", file=sys.__stdout__, flush=True)
            return
        self.mailbox.post.remote(("line", level, text))

    def epoch_started(self, label: str, num_steps: int) -> None:
        if self.rank == 0 and self.mailbox is not None:
            self.mailbox.post.remote(("epoch", label, num_steps))
            self._last_step, self._steps = 0.0, num_steps

    def step(self, done: int, status: str) -> None:
        now = time.monotonic()
        due = now - self._last_step >= STEP_EVERY_S or done == self._steps  # the last step always
        if self.rank == 0 and self.mailbox is not None and due:
            self._last_step = now
            self.mailbox.post.remote(("step", done, status))


@contextmanager
def relayed_lines() -> Iterator[Any]:
    """A mailbox for the run's workers (pass it in the loop config) and a thread showing what
    arrives; after the block, whatever is left is shown and the mailbox goes away."""
    mailbox = _Mailbox.options(**on_this_node()).remote()
    stop = threading.Event()
    thread = threading.Thread(target=_follow, args=(mailbox, stop), daemon=True, name="vfmkd-relay")
    thread.start()
    try:
        yield mailbox
    finally:
        stop.set()
        thread.join()  # it shows the last events, then closes the bar
        with suppress(Exception):  # Ray may be down with the run: the run's own error says why
            ray.kill(mailbox)


def _follow(mailbox: Any, stop: threading.Event) -> None:
    """Shows the mailbox's events until ``stop``, then the last ones. One ``take`` is in flight at a
    time and waited for until it answers: events it took are never dropped by a timeout."""
    shown = _Shown()
    pending = mailbox.take.remote()
    try:
        while True:
            stopping = stop.is_set()
            ready, _ = ray.wait([pending], timeout=FINAL_WAIT_S if stopping else POLL_S)
            if ready:
                shown.show(ray.get(pending))
                pending = mailbox.take.remote()
            if stopping:
                if ready:  # what rank 0 posted before the run ended
                    shown.show(ray.get(pending, timeout=FINAL_WAIT_S))
                return
            if ready:
                stop.wait(POLL_S)  # the next take after a pause, not in a busy loop
    except Exception as err:  # the mailbox or Ray went down with the run: its error says why
        log.debug("relay stopped: %s", err)
    finally:
        shown.close()


class _Shown:
    """The driver's side: the epoch bar and the lines above it."""

    def __init__(self) -> None:
        self.bar: Bar | None = None

    def show(self, events: list[tuple]) -> None:
        for kind, *rest in events:
            if kind == "line":
                level, text = rest
                log.log(level, "%s", text)
            elif kind == "epoch":
                label, total = rest
                if self.bar is None:
                    self.bar = Bar(label, total, unit="steps", plain=False)
                else:
                    self.bar.restart(label, total)
            elif kind == "step" and self.bar is not None:
                done, status = rest
                self.bar.update(done, status)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
