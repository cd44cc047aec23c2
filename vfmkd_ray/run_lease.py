"""One driver per run: a lease in the run directory, taken before anything is written there.

The lease is a folder of generations, ``<run dir>/lease/<NNNNNN>.json``, each the JSON record of one
driver (a random owner id, host, pid, command, start time, heartbeat); the highest generation is the
live one. A driver:

- takes generation 1 when there is none, or N + 1 over a stale generation N (heartbeat older than
  ``STALE_AFTER_S``: a driver that died without releasing it), with an exclusive create that only one
  racer wins: locally a hard link of a complete file, which fails when the name exists; on object
  storage a PUT with ``If-None-Match: *`` (fsspec's ``mode="create"``; S3 and moto honour it);
- refuses a live lease with one line naming its owner and the age of its heartbeat;
- rewrites only its own generation, every ``HEARTBEAT_S``, from a daemon thread, and notices when a
  higher generation appears (it was taken over: logged as an error);
- deletes its generation and every older one when it ends, on every exit path (the CLI turns
  SIGTERM into an exit that runs it); a SIGKILLed driver's lease goes stale and is taken over.

Ages compare the writer's wall clock with the reader's: hosts sharing run storage keep their clocks
in step (NTP).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from vfmkd_ray import storage

log = logging.getLogger(__name__)
LEASE_DIR = "lease"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
_ATTEMPTS = 3  # a racer that loses a takeover reads the winner's lease and refuses on it


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
    """The lease of ``run_dir`` for one driver; ``with RunLease(...):`` holds it."""

    def __init__(
        self,
        run_dir: str,
        command: str,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_s: float = HEARTBEAT_S,
    ):
        self.run_dir, self.folder = run_dir, storage.join(run_dir, LEASE_DIR)
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
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
            stale = None
            if generations:
                top = generations[-1]
                holder = self._read(top)
                age = time.time() - holder.heartbeat if holder is not None else float("inf")
                if holder is not None and age <= self.stale_after_s:
                    raise RunInUseError(self._refusal(holder))
                stale = holder or "an unreadable lease"
            target = generations[-1] + 1 if generations else 1
            self.record = replace(self.record, heartbeat=time.time())
            if create_exclusive(self._uri(target), self._payload()):
                self.generation = target
                if stale is not None:
                    what = stale.describe(time.time()) if isinstance(stale, LeaseRecord) else stale
                    log.warning("took over the lease of %s from %s: its driver is gone", self.run_dir, what)
                self._thread = threading.Thread(target=self._beat, name="run-lease", daemon=True)
                self._thread.start()
                return
        holder = self._read(self._generations()[-1])
        raise RunInUseError(self._refusal(holder) if holder else f"run {self.run_dir} is being taken")

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

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                newer = [g for g in self._generations() if g > self.generation]
                if newer:
                    self.lost = True
                    holder = self._read(newer[-1])
                    log.error(
                        "the lease of %s was taken over by %s: another driver now writes this run",
                        self.run_dir,
                        holder.describe(time.time()) if holder else "another driver",
                    )
                    return
                self.record = replace(self.record, heartbeat=time.time())
                storage.write_bytes_atomic(self._uri(self.generation), self._payload())
            except (OSError, storage.StorageError) as err:
                log.warning("lease heartbeat of %s failed (retried): %s", self.run_dir, err)

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
        try:
            return LeaseRecord(**json.loads(storage.read_text(self._uri(generation))))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # not a lease this product writes: treated as stale


@contextmanager
def held(run_dir: str, command: str) -> Iterator[RunLease]:
    """Holds the lease of ``run_dir`` for the block (released however it ends)."""
    with RunLease(run_dir, command) as lease:
        yield lease


def create_exclusive(uri: str, data: bytes) -> bool:
    """Writes ``data`` to ``uri`` unless something is there already; False when it was (another
    writer won). The object appears whole or not at all."""
    fs, path = storage.filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        temporary = f"{path}{storage.TEMP_MARKER}{uuid.uuid4().hex[:8]}"
        try:
            with storage.access(uri, "write"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(temporary, path)
                    return True
                except FileExistsError:
                    return False
        finally:
            with suppress(OSError):
                os.unlink(temporary)
    try:
        with storage.access(uri, "write"):
            fs.pipe_file(path, data, mode="create")
        return True
    except storage.StorageError as err:
        if isinstance(err.__cause__, FileExistsError):
            return False
        raise


def _remove(uri: str) -> None:
    fs, path = storage.filesystem(uri)
    with storage.access(uri):
        fs.rm(path)
