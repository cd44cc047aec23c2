"""Image ids through the tensor stream: fixed-width UTF-8 bytes, so that a worker can name the
images of a batch (a non-finite loss, for one) although Ray's torch batches hold tensors only."""

from __future__ import annotations

import numpy as np
import torch

IMAGE_ID_COLUMN = "image_id_utf8"
IMAGE_ID_BYTES = 64  # longer ids are cut: they only name images in messages


def encode_image_id(image_id: str) -> np.ndarray:
    data = image_id.encode()[:IMAGE_ID_BYTES]
    out = np.zeros(IMAGE_ID_BYTES, np.uint8)
    out[: len(data)] = np.frombuffer(data, np.uint8)
    return out


def decode_image_ids(encoded_BL: torch.Tensor | np.ndarray) -> tuple[str, ...]:
    rows = np.asarray(encoded_BL.cpu() if isinstance(encoded_BL, torch.Tensor) else encoded_BL, np.uint8)
    return tuple(bytes(row).rstrip(b"\0").decode(errors="replace") for row in rows)
