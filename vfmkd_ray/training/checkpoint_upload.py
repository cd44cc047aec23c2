"""Checkpoint uploads that survive transient storage errors, off the training thread.

Ray Train 2.60 uploads a reported checkpoint once, with no retry, and registers it only after the
upload returns. Reports here use ``CheckpointUploadMode.ASYNC`` with ``upload_with_retries``: the
training thread goes on while a background thread copies the checkpoint, retrying transient
errors (with the partial copy removed first) a few times with backoff. A checkpoint is registered
as the latest only once every file is in place, so a half-written one never is; one left by a dead
worker is removed at the next launch (``run_files.remove_unregistered_checkpoints``). An upload that
fails every attempt removes its partial copy too (on a full disk that space is the run's) and
raises ``CheckpointUploadError`` naming the destination's URI and the last cause; the checkpoints
registered before stay, so a relaunch resumes from the latest of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress

import pyarrow.fs

from vfmkd_ray.storage import StorageError

log = logging.getLogger(__name__)
ATTEMPTS = 4
FIRST_BACKOFF_S = 1.0
# pyarrow filesystem type -> URI scheme; a local destination is a plain path.
_SCHEMES = {"s3": "s3://", "gcs": "gs://", "hdfs": "hdfs://"}


class CheckpointUploadError(StorageError, OSError):
    """A checkpoint upload that failed every attempt; the message names the URI and the cause.

    A ``StorageError`` (training stops with its one line), and an ``OSError`` as before.
    """


def copy_with_retries(
    source: str,
    source_fs: pyarrow.fs.FileSystem,
    destination: str,
    destination_fs: pyarrow.fs.FileSystem,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Copies the directory ``source`` to ``destination``; a failed attempt's partial copy is
    deleted before the next, and after the last.

    Raises:
        CheckpointUploadError: every attempt failed; names the destination's URI and the last cause.
    """
    uri = _SCHEMES.get(destination_fs.type_name, "") + destination
    for attempt in range(1, attempts + 1):
        try:
            destination_fs.create_dir(destination, recursive=True)
            pyarrow.fs.copy_files(
                source, destination, source_filesystem=source_fs, destination_filesystem=destination_fs
            )
            return
        except OSError as err:
            cause = " ".join(str(err).split())
            with suppress(OSError):  # nothing was written, or the storage is gone
                destination_fs.delete_dir(destination)
            if attempt == attempts:
                raise CheckpointUploadError(
                    f"checkpoint upload to {uri} failed {attempts} times: {cause}"
                ) from err
            backoff = FIRST_BACKOFF_S * 2 ** (attempt - 1)
            log.warning(
                "checkpoint upload to %s failed (%s); retry %d in %.0fs", uri, cause, attempt, backoff
            )
            sleep(backoff)


def upload_with_retries(checkpoint, dir_name: str):
    """``ray.train.report``'s ``checkpoint_upload_fn``: into the run's directory, with retries."""
    import ray.train

    storage = ray.train.get_context().get_storage()
    destination = f"{storage.experiment_fs_path}/{dir_name}"
    copy_with_retries(checkpoint.path, checkpoint.filesystem, destination, storage.storage_filesystem)
    return ray.train.Checkpoint(destination, storage.storage_filesystem)
