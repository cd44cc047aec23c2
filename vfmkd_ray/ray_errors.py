"""Turning Ray's wrapped task/actor exceptions back into the product's own clear errors.

Ray wraps an error raised in a task (``RayTaskError``, Ray Data's ``UserCodeException``, Train's
``WorkerGroupError``) once or more. Exception chains do not survive pickling between processes, so
when the original object is gone its ``module.ClassName: message`` line is recovered from the remote
traceback text that Ray carries instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Ray Data appends its retry advice to the message of the error a task raised.
_RAY_DATA_SUFFIX = re.compile(
    r"\nFailed to [^\n]* after \d+/\d+ attempts \(total backoff [^)]*\)\..*\Z", re.S
)


def find_cause(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """An exception of one of ``types`` that caused ``err``, rebuilt from its text if need be, with
    the text Ray appended to its message removed."""
    chain = list(_walk(err))
    for current in reversed(chain):
        if isinstance(current, types) and not type(current).__name__.startswith("RayTaskError"):
            if current.args and isinstance(current.args[0], str):
                current.args = (_RAY_DATA_SUFFIX.sub("", current.args[0]), *current.args[1:])
            return current
    for current in chain:
        for error_type in types:
            match = re.search(rf"\b{error_type.__name__}: (.+)", str(current))
            if match:
                return error_type(match.group(1).strip())
    return None


# The last line of a Python traceback: `module.Name: message` of an error class.
_RAISED_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Failure))): (.+)$", re.M)
_RAY_WRAPPERS = ("RayTaskError", "RayActorError", "WorkerGroupError", "TrainingFailedError", "RayTrainError")


def raised_in_worker(err: BaseException) -> str | None:
    """``Name: message`` of the error a Ray task or worker raised under ``err``'s wrappers, from the
    remote traceback text Ray carries; None when none is found."""
    found = None
    for current in _walk(err):
        for match in _RAISED_LINE.finditer(str(current)):
            if not match.group(2).startswith(_RAY_WRAPPERS):
                found = f"{match.group(2)}: {match.group(3).strip()}"
    return found


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (Ray's wrappers put remote tracebacks after it), or the
    name of its type when it has none."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def was_interrupted(err: BaseException) -> bool:
    """Whether a Ctrl-C (``KeyboardInterrupt``, in this process or in a worker's traceback text) lies
    under ``err``'s wrappers."""
    return any(isinstance(c, KeyboardInterrupt) or "KeyboardInterrupt" in str(c) for c in _walk(err))


def _walk(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[object] = [err]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            stack.extend(failures.values())
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
