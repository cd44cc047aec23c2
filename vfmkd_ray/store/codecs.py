"""How feature tensors are encoded in the store's binary columns."""

from __future__ import annotations

import numpy as np

CODEC_DTYPES = {"fp16": "float16"}


def encode(features_CHW: np.ndarray, codec: str) -> bytes:
    if codec == "fp16":
        return np.ascontiguousarray(features_CHW, dtype=np.float16).tobytes()
    raise ValueError(f"unknown codec {codec!r}; valid: {sorted(CODEC_DTYPES)}")


def decode(data: bytes, shape: tuple[int, ...], codec: str) -> np.ndarray:
    """The stored tensor in its stored dtype (float16 for fp16); callers upcast on the device."""
    if codec == "fp16":
        return np.frombuffer(data, dtype=np.float16).reshape(shape)
    raise ValueError(f"unknown codec {codec!r}; valid: {sorted(CODEC_DTYPES)}")
