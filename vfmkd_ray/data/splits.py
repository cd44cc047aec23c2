"""The training/validation split: by a hash of the image id, the same on every node and in every
process (``data.val_fraction``)."""

from __future__ import annotations

import hashlib


def is_validation(image_id: str, val_fraction: float) -> bool:
    """A stable split by hash of the id: the same image lands in the same split on every node."""
    bucket = int.from_bytes(hashlib.sha1(image_id.encode()).digest()[:4], "little") / 2**32
    return bucket < val_fraction
