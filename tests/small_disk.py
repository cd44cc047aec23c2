"""A real small disk for tests: a tmpfs of a given size mounted on a folder (root only), so writes
fail with ENOSPC the way a full volume makes them fail; ``grow`` remounts it bigger, keeping its
files, as a person would free or add space before relaunching."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size`` (``mount`` syntax: ``64k``, ``34m``) for the block;
    skips the test where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        # Lazy: a process of the test (a Ray worker going away) may still hold a file there.
        subprocess.run(["umount", "-l", str(folder)], check=True)


def grow(folder: Path, size: str) -> None:
    """Gives the tmpfs on ``folder`` ``size`` in all; what it holds stays."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def fill(folder: Path) -> None:
    """Leaves no free byte on the disk of ``folder``."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
