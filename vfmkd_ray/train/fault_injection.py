"""A chaos knob for proving that runs survive worker failures.

Set ``VFMKD_FAIL_ONCE_AT_EPOCH=<epoch>:<marker path>`` in the job's environment: rank 0 raises at the
start of that epoch once (the marker file records that it did), so Ray Train restarts the worker
group from the last checkpoint. Unset, it does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

FAIL_ONCE_ENV = "VFMKD_FAIL_ONCE_AT_EPOCH"


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
