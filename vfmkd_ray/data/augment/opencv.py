"""OpenCV as the augmentation's renderer, single-threaded.

The replay's heavy per-sample steps (the tiles' resize, the affine warp, the HSV gains) run on
OpenCV, as MMYOLO's transforms do: 4-9x less CPU than PIL for the same steps (``benchmarks/
data_plane.py``) and MMYOLO's own arithmetic (its hue runs 0-179). A decode task holds the CPUs Ray
gave it (``data.decode_num_cpus``), so OpenCV's own thread pool would only oversubscribe them.
"""

from __future__ import annotations

import cv2

cv2.setNumThreads(1)

RENDERER = "opencv"  # recorded in a store of views' view_spec: its canvases were drawn by this

__all__ = ["RENDERER", "cv2"]
