"""How feature tensors are encoded in the store's binary columns, and decoded on the worker.

- ``fp16``: IEEE half precision (the default; half the bytes of fp32).
- ``bf16``: bfloat16 (fp32's range, fewer mantissa bits), shipped as its raw uint16 bits.
- ``int8``: symmetric per-channel quantisation, ``x ~= q * scale[c]`` with ``q`` in [-127, 127];
  the per-channel scales travel in the row (``feat.<layer>.scale``). Half the bytes of fp16.

Stored values are finite by contract: ``count_non_finite`` is how the writer refuses NaN/inf (or
fp16 overflow past 65504) and how the reader rejects a row that holds any.

Rows cross Ray's object store in their stored form; ``to_float32`` turns a batch into float32 on the
training device, so decoding costs no object-store bytes. torch is imported only by the functions
that need it: the data path's decode tasks use the NumPy half and start in fresh Ray worker
processes, where importing torch costs seconds of CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Codec -> the numpy dtype of its stored array (the ``feat.<layer>.dtype`` column).
CODEC_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
_STORED_NUMPY = {"fp16": np.float16, "bf16": np.uint16, "int8": np.int8}
INT8_LEVELS = 127
FP16_MAX = 65504.0  # the largest finite half; larger magnitudes encode as inf
# All ones in the exponent bits: inf or NaN. Testing the bits is ~8x faster than np.isfinite on fp16.
_FP16_EXPONENT, _BF16_EXPONENT = 0x7C00, 0x7F80


def check_codec(codec: str) -> None:
    if codec not in CODEC_DTYPES:
        raise ValueError(f"unknown codec {codec!r}; valid: {sorted(CODEC_DTYPES)}")


def encode(features_CHW: np.ndarray, codec: str) -> tuple[bytes, np.ndarray]:
    """Stored bytes of one float feature map and its per-channel scales (empty unless int8)."""
    check_codec(codec)
    features = np.ascontiguousarray(features_CHW, dtype=np.float32)
    if codec == "fp16":
        # torch's conversion rounds as NumPy's does (to nearest even; beyond FP16_MAX to inf, which
        # count_non_finite reports) at a quarter of its CPU time: the warp encodes every sample's
        # target. Its callers (the writer, the warp) have torch imported already.
        import torch

        return torch.from_numpy(features).half().numpy().tobytes(), np.zeros(0, np.float32)
    if codec == "bf16":
        bits = features.view(np.uint32)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest, ties to even
        return (rounded >> 16).astype(np.uint16).tobytes(), np.zeros(0, np.float32)
    peak = np.abs(features).reshape(features.shape[0], -1).max(axis=1)
    scale = np.where(peak > 0, peak / INT8_LEVELS, 1.0).astype(np.float32)
    quantised = np.clip(np.rint(features / scale[:, None, None]), -INT8_LEVELS, INT8_LEVELS)
    return quantised.astype(np.int8).tobytes(), scale


def stored_dtype(codec: str) -> np.dtype:
    """The numpy dtype of the stored array (bf16 is held as its uint16 bits)."""
    check_codec(codec)
    return np.dtype(_STORED_NUMPY[codec])


def stored_array(data: bytes, shape: tuple[int, ...], codec: str) -> np.ndarray:
    """The stored values as a numpy array (no decoding; bf16 stays as its uint16 bits)."""
    return np.frombuffer(data, dtype=stored_dtype(codec)).reshape(shape)


def count_non_finite(stored: np.ndarray, codec: str, scale: np.ndarray | None = None) -> int:
    """How many NaN/inf values a ``stored_array`` (or, for int8, its ``scale``) holds.

    Cheap on the data path: fp16 and bf16 are tested on their raw 16-bit patterns (exponent all
    ones) without decoding, and int8 values are always finite, so only their per-channel scales are
    checked.
    """
    check_codec(codec)
    if codec in ("fp16", "bf16"):
        exponent = _FP16_EXPONENT if codec == "fp16" else _BF16_EXPONENT
        bits = stored.view(np.uint16) & exponent
        # Counting is for the message: a finite row (every row but a corrupt one) costs one max.
        if not bits.size or bits.max() != exponent:
            return 0
        return int(np.count_nonzero(bits == exponent))
    if scale is None:
        return 0
    return int(np.count_nonzero(~np.isfinite(scale)))


def to_float32(stored: torch.Tensor, codec: str, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Decodes a batch of stored arrays (``B x C x H x W``) to float32 where the tensor lives.

    Args:
        stored: ``stored_array`` values, batched.
        scale: ``B x C`` per-channel scales; required for ``int8``.
    """
    import torch

    check_codec(codec)
    if codec == "fp16":
        return stored.float()
    if codec == "bf16":
        return (stored.to(torch.int32) << 16).view(torch.float32)
    if scale is None:
        raise ValueError("int8 features need their per-channel scale")
    return stored.float() * scale.float()[:, :, None, None]


def decode(data: bytes, shape: tuple[int, ...], codec: str, scale: np.ndarray | None = None) -> np.ndarray:
    """One stored feature map back to float32 (for checks and tools; training uses ``to_float32``)."""
    import torch

    stored = torch.from_numpy(stored_array(data, shape, codec).copy()).unsqueeze(0)
    scales = None if scale is None else torch.from_numpy(np.array(scale, np.float32)).unsqueeze(0)
    return to_float32(stored, codec, scales)[0].numpy()
