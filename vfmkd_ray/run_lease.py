"""One driver per run: a lease in the run directory, taken before anything is written there.

The lease is a folder of generations, ``<run dir>/lease/<NNNNNN>.json``, each the JSON record of one
driver (a random owner id, host, pid, command, start time, heartbeat); the highest generation is the
live one. A driver:

- takes generation 1 when there is none, or N + 1 over a stale generation N (heartbeat older than
  ``STALE_AFTER_S``: a driver that died without releasing it), with an exclusive create that only one
  racer wins (``storage.write_bytes_atomic(..., exclusive=True)``: a hard link locally, a PUT with
  ``If-None-Match: *`` on object storage);
- refuses a live lease with one line naming its owner and the age of its heartbeat;
- rewrites only its own generation, every ``HEARTBEAT_S``, from a daemon thread, and stops the
  process when a higher generation appears (it was taken over while it could not heartbeat: a
  frozen VM, a suspended laptop);
- deletes its generation and every older one when it ends, on every exit path (the CLI turns
  SIGTERM into an exit that runs it); a SIGKILLed driver's lease goes stale and is taken over.

Ages compare the writer's wall clock with the reader's: hosts sharing run storage keep their clocks
in step (NTP).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, replace

from vfmkd_ray import storage

log = logging.getLogger(__name__)
LEASE_DIR = "lease"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
_ATTEMPTS = 5  # a racer that loses reads the winner's lease next and refuses on it


class RunInUseError(RuntimeError):
    """Another live driver holds the run's lease; the message names it."""


@dataclass(frozen=True)
class LeaseRecord:
    owner: str  # random per driver: pids and hosts repeat
    host: str
    pid: int
    command: str
    started: float  # Unix time
    heartbeat: float

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return (
            f"{self.command} (pid {self.pid} on {self.host}, started {started}, last heartbeat "
            f"{max(0.0, now - self.heartbeat):.0f} s ago)"
        )


class RunLease:
    """The lease of ``run_dir`` for one driver; ``with RunLease(...):`` holds it.

    ``on_lost`` is called (from the heartbeat thread) when another driver took the run over; by
    default it sends this process SIGTERM, which the CLI turns into an exit: two drivers must not
    write one run.
    """

    def __init__(
        self,
        run_dir: str,
        command: str,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_s: float = HEARTBEAT_S,
        on_lost: Callable[[], None] | None = None,
    ):
        self.run_dir, self.folder = run_dir, storage.join(run_dir, LEASE_DIR)
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        self.on_lost = on_lost or _stop_this_process
        now = time.time()
        self.record = LeaseRecord(uuid.uuid4().hex, socket.gethostname(), os.getpid(), command, now, now)
        self.generation: int | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Raises RunInUseError when a live driver holds the run."""
        for _ in range(_ATTEMPTS):
            generations = self._generations()
            holder = None
            if generations:
                try:
                    holder = self._read(generations[-1])
                except FileNotFoundError:
                    continue  # released meanwhile: look again
                if holder is not None and time.time() - holder.heartbeat <= self.stale_after_s:
                    raise RunInUseError(self._refusal(holder))
            target = generations[-1] + 1 if generations else 1
            self.record = replace(self.record, heartbeat=time.time())
            if storage.write_bytes_atomic(self._uri(target), self._payload(), exclusive=True):
                self.generation = target
                if generations:
                    what = holder.describe(time.time()) if holder else "an unreadable lease"
                    log.warning("took over the lease of %s from %s: its driver is gone", self.run_dir, what)
                self._thread = threading.Thread(target=self._beat, name="run-lease", daemon=True)
                self._thread.start()
                return
            # Another driver created that generation first: the next look finds it live.
        raise RunInUseError(f"run {self.run_dir} is being taken by other drivers starting with this one")

    def release(self) -> None:
        """Stops the heartbeat and deletes this driver's generation and every older one."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.generation is None or self.lost:
            return
        try:
            for generation in self._generations():
                if generation <= self.generation:
                    _remove(self._uri(generation))
        except (OSError, storage.StorageError) as err:
            log.warning("could not release the lease of %s (it goes stale by itself): %s", self.run_dir, err)
        self.generation = None
        if not storage.is_remote(self.folder):
            with suppress(OSError):  # left when another driver holds the run again
                os.rmdir(self.folder)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                newer = [g for g in self._generations() if g > self.generation]
                if newer:
                    self._taken_over(newer[-1])
                    return
                self.record = replace(self.record, heartbeat=time.time())
                storage.write_bytes_atomic(self._uri(self.generation), self._payload())
            except (OSError, storage.StorageError) as err:
                log.warning("lease heartbeat of %s failed (retried): %s", self.run_dir, err)

    def _taken_over(self, generation: int) -> None:
        self.lost = True
        try:
            holder = self._read(generation)
        except FileNotFoundError:
            holder = None
        log.error(
            "the lease of %s was taken over by %s (this driver's heartbeat was older than %.0f s): "
            "stopping, as two drivers must not write one run",
            self.run_dir,
            holder.describe(time.time()) if holder else "another driver",
            self.stale_after_s,
        )
        self.on_lost()

    def _refusal(self, holder: LeaseRecord) -> str:
        return (
            f"run {self.run_dir} is in use by {holder.describe(time.time())}: wait for it to end or stop "
            f"it; a lease whose heartbeat is older than {self.stale_after_s:.0f} s is taken over"
        )

    def _generations(self) -> list[int]:
        names = [uri.rsplit("/", 1)[-1] for uri in storage.list_files(self.folder, "*.json")]
        return sorted(int(name[:-5]) for name in names if name[:-5].isdigit())

    def _uri(self, generation: int) -> str:
        return storage.join(self.folder, f"{generation:06d}.json")

    def _payload(self) -> bytes:
        return json.dumps(asdict(self.record)).encode()

    def _read(self, generation: int) -> LeaseRecord | None:
        """The lease record of ``generation``; None when it is not one this product writes (taken
        as stale). Raises FileNotFoundError when it is gone (released)."""
        try:
            return LeaseRecord(**json.loads(storage.read_text(self._uri(generation))))
        except (ValueError, TypeError):
            return None


def _stop_this_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _remove(uri: str) -> None:
    fs, path = storage.filesystem(uri)
    with storage.access(uri):
        fs.rm(path)
