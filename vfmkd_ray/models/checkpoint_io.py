"""Loading weights from a local path or any fsspec URI, checked against a sha256."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors

from vfmkd_ray import storage


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_sha256(uri: str) -> str:
    """sha256 of the file at ``uri``, streamed (a SAM ViT-H checkpoint is 2.5 GB)."""
    fs, path = storage.filesystem(uri)
    digest = hashlib.sha256()
    try:
        with fs.open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {uri}") from None
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    sha256: str


def load_state_dict(uri: str, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict stored at ``uri``; see ``load_weights``."""
    return load_weights(uri, expected_sha256).state_dict


def load_weights(uri: str, expected_sha256: str | None = None) -> LoadedWeights:
    """Reads a ``.safetensors`` file or any other PyTorch file (``.pth``, ``.pt``, a hub's ``.bin``;
    ``weights_only=True``) from ``uri``: a state dict, or a dict that holds one.

    Raises:
        ValueError: the file's sha256 differs from ``expected_sha256``, or it holds no state dict.
        FileNotFoundError: nothing at ``uri``.
    """
    data = storage.read_bytes(uri)
    digest = sha256_hex(data)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ValueError(f"checksum mismatch for {uri}: sha256 {digest}, expected {expected_sha256}")
    if uri.endswith(".safetensors"):
        try:
            return LoadedWeights(load_safetensors(data), digest)
        except Exception as err:
            raise ValueError(f"{uri} is not a readable safetensors file: {err}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{uri} is not a loadable weights file (PyTorch, read with weights_only=True; safetensors "
            f"files are read by their .safetensors suffix): {torch_load_reason(err)}"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(f"{uri} holds a {type(state).__name__}, not a state dict")
    return LoadedWeights(state, digest)


def torch_load_reason(err: Exception) -> str:
    """The line of a ``torch.load`` error that says what is wrong: its unpickler's reason, not the
    advice around it (which suggests ``weights_only=False``)."""
    text = str(err)
    _, marker, after = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (after if marker else text).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
