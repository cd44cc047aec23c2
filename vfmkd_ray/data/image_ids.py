"""Image ids through the tensor stream: fixed-width UTF-8 bytes, so that a worker can name the
images of a batch (a non-finite loss, for one) although Ray's torch batches hold tensors only.
Decoded only when a message needs them; no torch import (decode tasks start without it)."""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGE_ID_COLUMN = "image_id_utf8"
IMAGE_ID_BYTES = 64  # longer ids are cut: they only name images in messages


def encode_image_id(image_id: str) -> np.ndarray:
    data = image_id.encode()[:IMAGE_ID_BYTES]
    out = np.zeros(IMAGE_ID_BYTES, np.uint8)
    out[: len(data)] = np.frombuffer(data, np.uint8)
    return out


def decode_image_ids(encoded_BL: Any) -> tuple[str, ...]:
    """``encoded_BL``: a numpy array or a torch tensor (on any device) of ``encode_image_id`` rows."""
    rows = np.asarray(encoded_BL.cpu() if hasattr(encoded_BL, "cpu") else encoded_BL, np.uint8)
    return tuple(bytes(row).rstrip(b"\0").decode(errors="replace") for row in rows)
