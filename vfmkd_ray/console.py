"""Where a command's output goes: the product's own lines to the terminal; everything else written
to stderr (Ray's loggers, its workers' forwarded stderr with their tracebacks, its C++ core) into a
log file whose path errors name. ``--verbose`` or ``VFMKD_VERBOSE=1`` leaves stderr alone, and so
does a submitted Ray job's driver: its stderr is the job's log, which ``vfmkd jobs logs`` shows.

Live progress (``vfmkd_ray.progress``) draws on the person's stderr through the same rich console
as the product's lines, so a line logged while a bar is drawn lands above the bar. stdout is
untouched: results and summaries stay there.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from rich.console import Console as RichConsole

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
    # The rich console over ``stream`` that product lines and progress bars share.
    rich: RichConsole = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rich = RichConsole(file=self.stream, highlight=False, emoji=False, soft_wrap=True)
        object.__setattr__(self, "rich", rich)

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
    verbose = verbose_requested(verbose)
    log = None if verbose or RAY_JOB_ENV in os.environ or _fd_of(sys.stderr) != 2 else _open_log(command)
    if log is None:
        plain = Console(sys.stderr, None, verbose)
        with _product_logging(plain), _activated(plain):
            yield plain
        return
    sys.stderr.flush()
    saved = os.dup(2)
    person = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    os.dup2(log.fileno(), 2)
    diverted = Console(person, log.name)
    try:
        with _product_logging(diverted), _activated(diverted):
            yield diverted
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        person.close()


def current() -> Console:
    """The console of the command running in this process; a plain one on stderr outside any."""
    return _active[-1] if _active else Console(sys.stderr, None, verbose_requested())


def verbose_requested(verbose: bool = False) -> bool:
    return verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def shows_ray_output() -> bool:
    """Whether Ray's own output (worker logs, Ray Data's and Tune's progress tables) is wanted on
    the terminal: only when verbose; otherwise it stays in Ray's session log files."""
    return current().verbose


class _ProductLineHandler(logging.Handler):
    """Product log lines through the person's rich console (above any live progress bar)."""

    def __init__(self, target: Console):
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.target.rich.print(self.format(record), markup=False)
        except Exception:
            self.handleError(record)


@contextmanager
def _activated(active: Console) -> Iterator[Console]:
    _active.append(active)
    try:
        yield active
    finally:
        _active.pop()


@contextmanager
def _product_logging(target: Console) -> Iterator[None]:
    logger = logging.getLogger(PRODUCT_LOGGER)
    handler = _ProductLineHandler(target)
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
