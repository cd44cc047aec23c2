"""Turning Ray's wrapped task/actor exceptions back into the product's own clear errors."""

from __future__ import annotations


def find_cause(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The innermost exception of one of ``types`` in the cause chain of ``err``.

    Ray wraps an error raised in a task (``RayTaskError``, Ray Data's ``UserCodeException``, Train's
    ``TrainingFailedError``) once or more; the original sits in ``cause``/``__cause__``.
    """
    found = None
    seen: set[int] = set()
    stack: list[object] = [err]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, types) and not type(current).__name__.startswith("RayTaskError"):
            found = current
        stack.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])
        errors = getattr(current, "worker_failures", None) or getattr(current, "errors", None)
        if isinstance(errors, dict):
            stack.extend(errors.values())
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return found
