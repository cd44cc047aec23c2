"""Checkpoint uploads retry transient storage errors, removing a partial copy before each retry."""

import pyarrow.fs
import pytest

from vfmkd_ray.training import checkpoint_upload
from vfmkd_ray.training.checkpoint_upload import copy_with_retries


def test_a_transient_error_is_retried_after_the_partial_copy_is_removed(tmp_path, monkeypatch):
    source = tmp_path / "local"
    source.mkdir()
    (source / "training_state.pt").write_bytes(b"state")
    destination = tmp_path / "run" / "checkpoint_1"
    real_copy = pyarrow.fs.copy_files
    attempts = []

    def flaky_copy(src, dst, **kwargs):
        attempts.append(sorted(p.name for p in destination.glob("*")))
        if len(attempts) < 3:
            (destination / "half_written").write_bytes(b"x")
            raise OSError("connection reset by peer")
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr(checkpoint_upload.pyarrow.fs, "copy_files", flaky_copy)
    local = pyarrow.fs.LocalFileSystem()
    sleeps = []
    copy_with_retries(str(source), local, str(destination), local, attempts=4, sleep=sleeps.append)
    assert attempts == [[], [], []], "each attempt starts from an empty destination"
    assert sorted(p.name for p in destination.iterdir()) == ["training_state.pt"]
    assert sleeps == [1.0, 2.0]


def test_the_last_attempts_error_names_the_destination(tmp_path, monkeypatch):
    def failing_copy(src, dst, **kwargs):
        raise OSError("service unavailable")

    monkeypatch.setattr(checkpoint_upload.pyarrow.fs, "copy_files", failing_copy)
    local = pyarrow.fs.LocalFileSystem()
    destination = str(tmp_path / "run" / "checkpoint_2")
    with pytest.raises(
        OSError, match=f"checkpoint upload to {destination} failed 3 times: service unavailable"
    ):
        copy_with_retries(str(tmp_path), local, destination, local, attempts=3, sleep=lambda s: None)
