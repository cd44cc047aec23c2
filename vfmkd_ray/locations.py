"""The places a command reads and writes, checked for the right kind before any Ray work starts:
a dataset root that is a directory (or an existing S3 prefix), and output roots that are, or can
become, writable directories (or sit in a reachable bucket). Otherwise a whole teacher pass could run
before ``store.root`` turns out to be a file."""

from __future__ import annotations

import os
from pathlib import Path

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError, ExperimentConfig


def check_locations(
    cfg: ExperimentConfig,
    reads: tuple[str, ...] = (),
    writes: tuple[str, ...] = (),
    may_read: tuple[str, ...] = (),
) -> None:
    """``reads``, ``writes`` and ``may_read`` (read when present, as a store that teachers may do
    without) are dotted config keys of ``cfg``: ``data.root``, ``store.root``, ``train.storage_path``.

    Raises:
        ConfigError: naming the key, its value and what is wrong with it.
    """
    for key in reads:
        _check_readable(key, _value(cfg, key), required=True)
    for key in may_read:
        _check_readable(key, _value(cfg, key), required=False)
    for key in writes:
        _check_writable(key, _value(cfg, key))


def _value(cfg: ExperimentConfig, key: str) -> str:
    section, field = key.split(".")
    return storage.absolute(str(getattr(getattr(cfg, section), field)))


def _check_readable(key: str, uri: str, required: bool) -> None:
    if storage.is_remote(uri):
        if required and not storage.exists(uri):
            raise ConfigError(f"{key}={uri} does not exist (no object under that prefix)")
        return
    path = Path(uri)
    if not path.exists():
        if required:
            raise ConfigError(f"{key}={uri} does not exist")
        return
    if not path.is_dir():
        raise ConfigError(f"{key}={uri} is a file, not a directory")


def _check_writable(key: str, uri: str) -> None:
    if storage.is_remote(uri):
        # The nearest existing prefix: credentials limited to a prefix may not list the bucket.
        scheme, rest = uri.split("://", 1)
        parts = rest.rstrip("/").split("/")
        prefixes = [f"{scheme}://{'/'.join(parts[:n])}" for n in range(len(parts), 0, -1)]
        if not any(storage.exists(prefix) for prefix in prefixes):
            raise ConfigError(f"{key}={uri}: the bucket {prefixes[-1]} does not exist or cannot be reached")
        return
    path = Path(uri)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"lies under the file {existing}"
        raise ConfigError(f"{key}={uri} {what}, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        target = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        raise ConfigError(f"{key}={uri} {target}")
