"""The one owner of a run's checkpoints on a worker (torchtitan's ``CheckpointManager``): restoring
the latest checkpoint, the in-epoch and end-of-epoch reports with rank 0's checkpoint, the metrics
log and the best files.

A checkpoint is ``training_state.pt``: one ``state_dict()`` per stateful part, by name. The parts are
whatever the run lists (``TrainTask.stateful()``: the model, optimiser, schedule and scaler, and the
training state itself, ``training.state``), so a new one (an EMA of the weights, the data order) plugs
in by being listed there, with no edit here or in the loop. Files load with ``weights_only=True``.

Every worker reports the same number of times (Ray Train's rule); only rank 0's reports carry a
checkpoint, uploaded in the background with retries (``training.checkpoint_upload``). Ray Train is
reached through a ``Reports`` object, so the manager is testable without Ray.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs
import torch

from vfmkd_ray import run_files
from vfmkd_ray.config_yaml import clip
from vfmkd_ray.models.checkpoint_io import torch_load_reason
from vfmkd_ray.training.state import STATE_PART, TrainingState


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], /) -> Any: ...


class Reports(Protocol):
    """What the manager needs of Ray Train."""

    def latest(self) -> tuple[pyarrow.fs.FileSystem, str] | None:
        """The latest registered checkpoint's filesystem and directory; None before the first."""

    def report(self, record: dict[str, Any], directory: str | None) -> None:
        """Reports ``record``, with the checkpoint in the local ``directory`` when given."""


class RayTrainReports:
    """``ray.train`` as ``Reports``: ASYNC uploads with retries (``training.checkpoint_upload``)."""

    def latest(self) -> tuple[pyarrow.fs.FileSystem, str] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return None if checkpoint is None else (checkpoint.filesystem, checkpoint.path)

    def report(self, record: dict[str, Any], directory: str | None) -> None:
        import ray.train

        from vfmkd_ray.training.checkpoint_upload import upload_with_retries

        if directory is None:
            ray.train.report(record)
            return
        ray.train.report(
            record,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
            checkpoint_upload_fn=upload_with_retries,
        )


class CheckpointManager:
    """Args:
    rank: this worker's rank; rank 0 writes the checkpoints, the metrics log and the best files.
    run_dir: the run's directory (``run_files`` names its files).
    reports: Ray Train (default), or a test's own.
    """

    def __init__(self, rank: int, run_dir: str, reports: Reports | None = None):
        self.rank, self.run_dir = rank, run_dir
        self.reports = reports or RayTrainReports()
        self._latest: tuple[dict[str, Any], str] | None = None
        self._read = False

    def restore(self, parts: dict[str, Stateful]) -> bool:
        """Loads every part from the latest checkpoint; False when there is none and the parts stay
        as built. The checkpoint is then let go: a worker does not hold a second copy of the
        model and optimiser for the rest of its run.

        Raises:
            RunFileError: the checkpoint lacks a part, or a part's state does not fit (written by an
                older vfmkd or another config).
        """
        restored = self._load_into(parts)
        self._latest = None
        return restored

    def restore_state(self) -> TrainingState:
        """The training state of the latest checkpoint (a fresh one before the first): read before
        the other parts are built, since the steps still to take size the schedule; ``restore``
        of the other parts follows."""
        state = TrainingState()
        self._load_into({STATE_PART: state})
        return state

    def _load_into(self, parts: dict[str, Stateful]) -> bool:
        latest = self._payload()
        if latest is None:
            return False
        payload, origin = latest
        for name, part in parts.items():
            if name not in payload:
                raise run_files.RunFileError(
                    f"checkpoint {origin} has no {name!r} state (written by an older vfmkd? train under a "
                    "new name)"
                )
            try:
                part.load_state_dict(payload[name])
            except (ValueError, KeyError, RuntimeError) as err:
                raise run_files.RunFileError(
                    f"{origin}'s {name!r} state does not fit this run's ({clip(str(err))}): written by "
                    "another config or an older vfmkd? train under a new name"
                ) from err
        return True

    def report_inside_epoch(self, record: dict[str, Any], parts: dict[str, Stateful]) -> None:
        """A checkpoint inside an epoch: ``parts`` hold the epoch's position so far."""
        self._report(record, parts)

    def report_epoch_end(
        self,
        record: dict[str, Any],
        parts: dict[str, Stateful],
        state: TrainingState,
        improved: bool,
        write_best: Callable[[], Any],
    ) -> None:
        """The end of an epoch: rank 0 writes, when the epoch ``improved``, the best files
        (``write_best``: ``run_files.write_best`` of the model and config), then the metrics log from
        ``state``'s history, then the checkpoint. In that order, a write that fails (a full disk)
        leaves a log that lists no epoch the best files or a checkpoint lack."""
        if self.rank == 0:
            if improved:
                write_best()
            run_files.write_metrics_log(self.run_dir, state.history)
        self._report(record, parts)

    def _report(self, record: dict[str, Any], parts: dict[str, Stateful]) -> None:
        if self.rank != 0:
            self.reports.report(record, None)
            return
        directory = tempfile.mkdtemp(prefix="vfmkd-checkpoint-")  # Ray deletes it once uploaded
        torch.save(
            {name: part.state_dict() for name, part in parts.items()}, Path(directory, run_files.STATE_FILE)
        )
        self.reports.report(record, directory)

    def _payload(self) -> tuple[dict[str, Any], str] | None:
        if not self._read:
            self._read = True
            latest = self.reports.latest()
            if latest is not None:
                filesystem, path = latest
                # Straight from the checkpoint's storage into memory. as_directory() would share one
                # temporary download per node among the workers, and after a worker-group restart
                # from S3 one worker read the state file while another was deleting that download.
                with filesystem.open_input_stream(f"{path}/{run_files.STATE_FILE}") as stream:
                    data = io.BytesIO(stream.read())
                try:
                    payload = torch.load(data, map_location="cpu", weights_only=True)
                except Exception as err:
                    reason = torch_load_reason(err)
                    raise run_files.RunFileError(
                        f"{path}/{run_files.STATE_FILE} is not a loadable checkpoint: {reason}"
                    ) from err
                self._latest = (payload, path)
        return self._latest
