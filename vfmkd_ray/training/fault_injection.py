"""Chaos knobs for proving that runs survive failures, and a trace to check what they repeated.

- ``VFMKD_FAIL_ONCE_AT_EPOCH=<epoch>:<marker path>``: rank 0 raises at the start of that epoch once
  (the marker file records that it did), so Ray Train restarts the worker group from the last
  checkpoint.
- ``VFMKD_KILL_ONCE_AT_STEP=<epoch>:<step>:<marker path>``: rank 0 kills its own process with
  SIGKILL (no exception, no cleanup: a lost node or an OOM kill) after that step of that epoch (both
  1-based), once; first it waits until Ray has committed the checkpoints already reported, so the
  kill lands a while after the last checkpoint rather than inside Ray's commit of it (a real
  failure there loses that checkpoint too: the run repeats from the one before).
- ``VFMKD_SAMPLE_TRACE=<directory>``: every worker appends one line per training step, ``<epoch>
  <step> <sample keys...>``, to ``<directory>/rank<r>.pid<p>.txt``: which samples each step used.
- ``VFMKD_HOLD_AFTER_STEP=<directory>``: a worker that finished step S of epoch E (numbered as
  the sample trace and the checkpoints number them), after that step's checkpoint, waits while
  ``<directory>/<E>.<S>`` exists; rank 0 first waits until Ray has committed the checkpoints
  already reported, then each worker says it is held with ``<directory>/<E>.<S>.held.rank<r>``. A
  test holds a group where it loses or adds a node, so what the run repeats does not hang on how
  fast the steps are.

Unset, they do nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAIL_ONCE_ENV = "VFMKD_FAIL_ONCE_AT_EPOCH"
KILL_ONCE_ENV = "VFMKD_KILL_ONCE_AT_STEP"
SAMPLE_TRACE_ENV = "VFMKD_SAMPLE_TRACE"
HOLD_ENV = "VFMKD_HOLD_AFTER_STEP"
HOLD_POLL_S = 0.2


class InjectedFailure(RuntimeError):
    pass


def maybe_fail_once(epoch: int, rank: int) -> None:
    spec = os.environ.get(FAIL_ONCE_ENV)
    if not spec or rank != 0:
        return
    at_epoch, _, marker = spec.partition(":")
    if epoch == int(at_epoch) and marker and not Path(marker).exists():
        Path(marker).touch()
        raise InjectedFailure(f"injected failure at epoch {epoch} ({FAIL_ONCE_ENV}={spec})")


def maybe_kill_once(epoch: int, step: int, rank: int) -> None:
    spec = os.environ.get(KILL_ONCE_ENV)
    if not spec or rank != 0:
        return
    at_epoch, at_step, marker = spec.split(":", 2)
    if (epoch, step) == (int(at_epoch), int(at_step)) and not Path(marker).exists():
        _wait_for_committed_checkpoints()
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)


def hold_after_step(epoch: int, step: int, rank: int) -> None:
    directory = os.environ.get(HOLD_ENV)
    if not directory:
        return
    marker = Path(directory) / f"{epoch}.{step}"
    if not marker.exists():
        return
    if rank == 0:
        _wait_for_committed_checkpoints()
    Path(f"{marker}.held.rank{rank}").touch()
    while marker.exists():
        time.sleep(HOLD_POLL_S)


def _wait_for_committed_checkpoints() -> None:
    import ray.train

    ray.train.get_all_reported_checkpoints(ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=60)


def trace_step(epoch: int, step: int, rank: int, keys: list[int]) -> None:
    directory = os.environ.get(SAMPLE_TRACE_ENV)
    if not directory:
        return
    with open(Path(directory) / f"rank{rank}.pid{os.getpid()}.txt", "a") as trace:
        trace.write(" ".join(map(str, [epoch, step, *keys])) + "\n")
