"""The labelled subset of the training split at a label budget (``data.label_fraction``).

Training images are ranked by a hash of their id and the first ``round(fraction * n)`` are kept, so
the subset is the same on every node, for every backbone and seed, and nested: the 10% subset lies
inside the 50% one. The validation split is never reduced: every budget is scored on the same images.
"""

from __future__ import annotations

import hashlib

from vfmkd_ray.data.coco import ImageRecord
from vfmkd_ray.data.splits import is_validation


def labelled_subset(
    records: list[ImageRecord], val_fraction: float, label_fraction: float
) -> list[ImageRecord]:
    """``records`` with the training split cut to ``label_fraction`` of its images (at least one);
    validation images and the order of ``records`` are kept."""
    if label_fraction >= 1.0:
        return list(records)
    train = [r.image_id for r in records if not is_validation(r.image_id, val_fraction)]
    keep = max(1, round(label_fraction * len(train)))
    kept = set(sorted(train, key=_rank)[:keep])
    return [r for r in records if r.image_id in kept or is_validation(r.image_id, val_fraction)]


def _rank(image_id: str) -> bytes:
    # Not the split's hash: the subset must not be correlated with how close an id came to validation.
    return hashlib.sha1(f"label-subset:{image_id}".encode()).digest()
