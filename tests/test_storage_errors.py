"""Storage failures are one line naming the URI and the cause, and lose nothing already written: a
write to a full disk (a real small tmpfs), and Ray Train's controller failing to write the run state
to an S3 endpoint that is down or to a full disk (the errors it really raises, as they reach the
driver)."""

import pickle
from pathlib import Path

import pyarrow.fs
import pytest
from ray.train import ControllerError

from tests.s3_server import dead_s3_filesystem
from tests.small_disk import fill, small_disk
from vfmkd_ray import storage
from vfmkd_ray.ray_errors import first_line, storage_failure

SNAPSHOT = "checkpoint_manager_snapshot.json"  # what Ray Train's controller writes to storage_path


def test_a_write_to_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    with small_disk(tmp_path / "small", "64k") as disk:
        uri = str(disk / "runs" / "metrics.csv")
        storage.write_text_atomic(uri, "epoch 1\n")
        fill(disk)
        with pytest.raises(storage.StorageError) as caught:
            storage.write_bytes_atomic(uri, b"epoch 1\nepoch 2\n" * 10_000)
        assert str(caught.value) == f"cannot write {uri}: [Errno 28] No space left on device"
        assert Path(uri).read_text() == "epoch 1\n"
        assert [p.name for p in (disk / "runs").iterdir()] == ["metrics.csv"], "a temporary was left"


def test_the_controllers_failed_write_to_s3_names_the_object_and_the_cause():
    dead = dead_s3_filesystem()
    error = _controller_error(lambda: _write(dead, f"bucket/runs/tiny/{SNAPSHOT}"))
    assert first_line(error).startswith("Ray Train's controller failed: OSError: When initiating")
    found = storage_failure(error, "s3://bucket/runs/tiny")
    assert isinstance(found, storage.StorageError)
    assert str(found).startswith(
        f"cannot write s3://bucket/runs/tiny/{SNAPSHOT}: AWS Error NETWORK_CONNECTION during "
        "CreateMultipartUpload operation: curlCode: 7, Could not connect to server"
    )
    assert "\n" not in str(found)


def test_the_controllers_failed_write_to_a_full_disk_names_the_run_and_enospc(tmp_path):
    with small_disk(tmp_path / "small", "64k") as disk:
        run_dir = disk / "runs" / "tiny"
        run_dir.mkdir(parents=True)
        fill(disk)
        local = pyarrow.fs.LocalFileSystem()
        error = _controller_error(lambda: _write(local, str(run_dir / SNAPSHOT), 100_000))
    found = storage_failure(error, str(run_dir))
    assert str(found).startswith(f"cannot write {run_dir} (Ray Train's run state): [Errno 28] ")
    assert str(found).endswith("No space left on device")


def test_errors_that_are_not_storage_are_left_alone():
    assert storage_failure(ControllerError(AttributeError("no hook")), "/runs/tiny") is None
    assert storage_failure(RuntimeError("OSError: [Errno 28] in some text"), "/runs/tiny") is None
    assert (
        first_line(ControllerError(ValueError("bad\nmore")))
        == "Ray Train's controller failed: ValueError: bad"
    )


def _write(fs: pyarrow.fs.FileSystem, path: str, size: int = 2) -> None:
    with fs.open_output_stream(path) as stream:
        stream.write(b"{" * size)


def _controller_error(write) -> ControllerError:
    """What ``trainer.fit`` raises when the controller's ``write`` fails: Train's controller error
    around it, after the trip from the controller actor to the driver (a pickle)."""
    with pytest.raises(OSError) as caught:
        write()
    return pickle.loads(pickle.dumps(ControllerError(caught.value)))
