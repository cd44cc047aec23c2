"""vfmkd_ray: distill vision foundation models into small detector backbones on Ray.

The Python API (``vfmkd_ray.api``): ``train``, ``precompute``, ``evaluate``, ``export``,
``make_config`` and ``Run``, imported on first use so that ``import vfmkd_ray`` stays cheap for the
processes that only need a part of it (decode tasks, the CLI's config check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "evaluate", "export", "make_config", "precompute", "train"]

if TYPE_CHECKING:
    from vfmkd_ray.api import Run, evaluate, export, make_config, precompute, train


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vfmkd_ray import api

        return getattr(api, name)
    raise AttributeError(f"module 'vfmkd_ray' has no attribute {name!r}")
