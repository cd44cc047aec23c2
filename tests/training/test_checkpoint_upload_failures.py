"""A checkpoint upload that fails every retry names the destination's URI and the last cause, and
leaves no partial copy: to an S3 endpoint that is down, and to a full disk (a real small tmpfs)."""

import pyarrow.fs
import pytest

from tests.s3_server import dead_s3_filesystem
from tests.small_disk import small_disk
from vfmkd_ray.storage import StorageError
from vfmkd_ray.training.checkpoint_upload import CheckpointUploadError, copy_with_retries


def test_an_upload_to_an_endpoint_that_is_down_names_the_s3_uri_and_the_cause(tmp_path):
    source = tmp_path / "checkpoint"
    source.mkdir()
    (source / "training_state.pt").write_bytes(b"state")
    dead = dead_s3_filesystem()
    local = pyarrow.fs.LocalFileSystem()
    with pytest.raises(StorageError) as caught:
        copy_with_retries(str(source), local, "bucket/runs/tiny/checkpoint_1", dead, 2, sleep=lambda s: None)
    message = str(caught.value)
    assert message.startswith("checkpoint upload to s3://bucket/runs/tiny/checkpoint_1 failed 2 times: ")
    assert "Could not connect to server" in message and "\n" not in message
    assert isinstance(caught.value, OSError)  # what callers caught before


def test_an_upload_to_a_full_disk_names_the_path_and_enospc_and_leaves_no_partial_copy(tmp_path):
    source = tmp_path / "checkpoint"
    source.mkdir()
    (source / "training_state.pt").write_bytes(bytes(300_000))
    with small_disk(tmp_path / "small", "256k") as disk:
        kept = disk / "runs" / "tiny" / "checkpoint_1"
        kept.mkdir(parents=True)
        (kept / "training_state.pt").write_bytes(bytes(100_000))  # registered before: it stays
        destination = str(disk / "runs" / "tiny" / "checkpoint_2")
        local = pyarrow.fs.LocalFileSystem()
        with pytest.raises(CheckpointUploadError) as caught:
            copy_with_retries(str(source), local, destination, local, attempts=2, sleep=lambda s: None)
        assert str(caught.value).startswith(f"checkpoint upload to {destination} failed 2 times: [Errno 28]")
        assert str(caught.value).endswith("No space left on device")
        assert sorted(p.name for p in kept.parent.iterdir()) == ["checkpoint_1"]
        assert (kept / "training_state.pt").stat().st_size == 100_000
