"""The one place the product imports OpenMMLab (mmcv, mmengine, mmdet, mmyolo, mmpretrain).

The stack is optional: ``make mm`` installs it into the project's environment (mmcv's C++ ops
built from source against that environment's torch, see ``tools/build_mmcv.sh``). Nothing else in
the product imports it at module level, so the core runs without it; what needs it calls
``mm_registry()`` and gets ``OpenMMLabMissing``, a one-line error saying how to install it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import Any

# A registry type's scope (``mmdet.ResNet``) -> the package whose ``utils.register_all_modules``
# fills that scope's registries.
SCOPES = ("mmdet", "mmyolo", "mmpretrain")
PACKAGES = ("mmcv", "mmengine", *SCOPES)  # the stack, as `make mm` installs it
logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with `make mm` (docs/openmmlab.md)"

# mmyolo 0.6.0's __init__ asserts mmcv < 2.1.0, which no mmcv with ops for torch >= 2.1 satisfies;
# mmyolo's code runs on mmcv 2.3 (its whole YOLODetector trains and predicts there, tests/mm).
MMYOLO_ACCEPTED_MMCV = "2.0.0"


class OpenMMLabMissing(RuntimeError):
    """The OpenMMLab stack is not installed (or does not import) in this environment."""


@contextlib.contextmanager
def _mmcv_version_shown_as(version: str) -> Iterator[None]:
    """``mmcv.__version__`` reads ``version`` inside the block only; the real one is restored."""
    import mmcv

    real = mmcv.__version__
    mmcv.__version__ = version
    try:
        yield
    finally:
        mmcv.__version__ = real


def _import_stack() -> None:
    printed = io.StringIO()
    # mmdet and mmpretrain print (to stdout, whatever the level) and warn at import that the
    # optional OneDL datasets are absent: kept off the console, in the debug log.
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.simplefilter("ignore")
        import mmcv.ops  # noqa: F401  (the compiled ops: fails here, not mid-training, when absent)
        import mmdet  # noqa: F401

        with _mmcv_version_shown_as(MMYOLO_ACCEPTED_MMCV):
            import mmyolo  # noqa: F401
        for scope in SCOPES:
            importlib.import_module(f"{scope}.utils").register_all_modules(init_default_scope=False)
    if printed.getvalue().strip():
        logger.debug("OpenMMLab printed at import: %s", printed.getvalue().strip())
    from mmengine.logging import MMLogger

    # MMEngine's logger prints to stdout; at INFO, init_weights prints a line per parameter.
    MMLogger.get_current_instance().setLevel(logging.WARNING)


_READY = False


def mm_registry(needed_for: str) -> Any:
    """MMEngine's root ``MODELS`` registry with every scope of ``SCOPES`` registered.

    Raises:
        OpenMMLabMissing: the stack does not import; the message names ``needed_for``.
    """
    global _READY
    if not _READY:
        try:
            _import_stack()
        except (ImportError, AssertionError) as err:  # mmdet asserts the mmcv version it imports with
            raise OpenMMLabMissing(
                f"{needed_for} needs the OpenMMLab stack (mmcv with its ops, mmdet, mmyolo, mmpretrain), "
                f"which does not import here ({err}); {INSTALL_HINT}"
            ) from None
        _READY = True
    from mmengine.registry import MODELS

    return MODELS
