"""Turning Ray's wrapped task/actor exceptions back into the product's own clear errors.

Ray wraps an error raised in a task (``RayTaskError``, Ray Data's ``UserCodeException``, Train's
``WorkerGroupError``) once or more. Exception chains do not survive pickling between processes, so
when the original object is gone its ``module.ClassName: message`` line is recovered from the remote
traceback text that Ray carries instead. Train's ``ControllerError`` wraps what its controller
raised, most often a failed write of its run state to ``storage_path``
(``checkpoint_manager_snapshot.json``); ``storage_failure`` names that location.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from vfmkd_ray.storage import StorageError, describe

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
    name of its type when it has none; for Train's controller error, what its controller raised
    (its own first line is "Training failed due to controller error:")."""
    failure = getattr(err, "controller_failure", None)
    if isinstance(failure, BaseException):
        return f"Ray Train's controller failed: {type(failure).__name__}: {first_line(failure)}"
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# errno values that say a write was refused (pyarrow writes "[errno 28]" in its text too).
_WRITE_REFUSED_ERRNO = re.compile(r"\[errno (28|30|122)\]", re.I)  # ENOSPC, EROFS, EDQUOT


def storage_failure(err: BaseException, run_storage: str) -> StorageError | None:
    """A storage error under ``err`` that Ray raised itself (the product's own code names its
    URIs): as a ``StorageError`` naming the URI and the cause, or None.

    Ray Train reads and writes the run's storage through pyarrow, whose S3 errors name the object
    (``s3://bucket/key``). Its controller writes the run state into ``run_storage`` (the run's
    directory); an error there that names no object is told as that directory's.
    """
    failures = [c for c in _walk(err) if isinstance(c, OSError) and not _is_wrapper(c)]
    texts = [" ".join(str(c).split()) for c in failures]
    raised = raised_in_worker(err)
    if raised and raised.split(":", 1)[0] in ("OSError", "IOError"):
        texts.append(raised.split(": ", 1)[1])
    for text in texts:
        if named := uri_in_message(text):
            uri, action, cause = named
            return StorageError(f"cannot {action} {uri}: {cause}")
    controller = [c for c in _walk(err) if isinstance(getattr(c, "controller_failure", None), OSError)]
    if not controller:
        return None
    text = describe(controller[0].controller_failure)
    action = "write" if _WRITE_REFUSED_ERRNO.search(text) else "access"
    return StorageError(f"cannot {action} {run_storage} (Ray Train's run state): {text}")


# pyarrow's S3 errors name the object as "When <doing> ... key 'K' in bucket 'B': cause" or name
# the bucket alone.
_PYARROW_S3_OBJECT = re.compile(r"(?:key '([^']*)' in )?bucket '([^']+)':?\s*")
_PYARROW_S3_WRITES = ("When uploading", "When completing", "When initiating", "When creating", "When copying")


def uri_in_message(message: str) -> tuple[str, str, str] | None:
    """``(s3://bucket/key, "write" or "access", the cause)`` for an error of pyarrow's S3
    filesystem (Ray Train's own storage reads and writes go through it), which names an object only
    in its text; None for any other message."""
    match = _PYARROW_S3_OBJECT.search(message)
    if match is None or not message.startswith("When "):
        return None
    key, bucket = match.group(1), match.group(2)
    uri = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    action = "write" if message.startswith(_PYARROW_S3_WRITES) else "access"
    return uri, action, " ".join(message[match.end() :].split()) or message


def _is_wrapper(err: BaseException) -> bool:
    return type(err).__name__.startswith(_RAY_WRAPPERS)


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
        # Train's controller error and a worker's error keep what was raised in these attributes.
        stack.extend([getattr(current, "controller_failure", None), getattr(current, "_base_exc", None)])
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            stack.extend(failures.values())
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
