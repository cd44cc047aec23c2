"""Where a command's output goes: the product's own lines to the terminal; everything else written
to stderr (Ray's loggers, its workers' forwarded stderr with their tracebacks, its C++ core) into a
log file whose path errors name. ``--verbose`` or ``VFMKD_VERBOSE=1`` leaves stderr alone, and so
does a submitted Ray job's driver: its stderr is the job's log, which ``vfmkd jobs logs`` shows.

stdout is untouched: results, and the lines the training workers print for people, stay there.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

VERBOSE_ENV = "VFMKD_VERBOSE"
LOG_DIR_ENV = "VFMKD_LOG_DIR"  # default: <tmp>/vfmkd-logs-<uid>
PRODUCT_LOGGER = "vfmkd_ray"
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a submitted job
_active: list[Console] = []  # the console of the command running in this process, if any


@dataclass(frozen=True)
class Console:
    stream: TextIO  # the person's stderr
    log_path: str | None  # where the rest of stderr went; None when nothing was diverted
    verbose: bool = False

    def error(self, line: str, with_traceback: bool = False) -> None:
        """``line`` to the person; the traceback of the exception being handled to the log file
        (to the terminal when verbose)."""
        if with_traceback and (self.log_path or self.verbose):
            traceback.print_exc(file=sys.stderr)
        where = f" (full log: {self.log_path})" if self.log_path else ""
        print(f"{line}{where}", file=self.stream, flush=True)


@contextmanager
def console(command: str, verbose: bool = False) -> Iterator[Console]:
    """For the duration of one command: diverts file descriptor 2 to a log file and logs the
    product's own lines (``vfmkd_ray.*`` loggers, INFO and up) to the person's stderr. Nothing is
    diverted when verbose, in a Ray job's driver, when stderr is not the process's fd 2 (a test's
    capture), or when no log file can be opened; a command run inside another shares its console."""
    if _active:
        yield _active[-1]
        return
    verbose = verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    log = None if verbose or RAY_JOB_ENV in os.environ or _fd_of(sys.stderr) != 2 else _open_log(command)
    if log is None:
        with _product_logging(sys.stderr), _activated(Console(sys.stderr, None, verbose)) as plain:
            yield plain
        return
    sys.stderr.flush()
    saved = os.dup(2)
    person = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    os.dup2(log.fileno(), 2)
    try:
        with _product_logging(person), _activated(Console(person, log.name)) as diverted:
            yield diverted
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        person.close()


@contextmanager
def _activated(current: Console) -> Iterator[Console]:
    _active.append(current)
    try:
        yield current
    finally:
        _active.pop()


@contextmanager
def _product_logging(stream: TextIO) -> Iterator[None]:
    logger = logging.getLogger(PRODUCT_LOGGER)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[vfmkd] %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _fd_of(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _open_log(command: str) -> BinaryIO | None:
    """This command's log file, in a folder of this user's (another user's would not be writable)."""
    default = Path(tempfile.gettempdir()) / f"vfmkd-logs-{os.getuid()}"
    folder = Path(os.environ.get(LOG_DIR_ENV) or default)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return open(folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log", "ab")
    except OSError:
        return None
