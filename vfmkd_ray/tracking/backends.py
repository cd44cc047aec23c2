"""The two tracking backends behind one small interface: start (or resume) a run, log params,
log an epoch's metrics, attach a file, end. Errors propagate: ``run_tracker`` decides what a
failure costs (a warning, never the run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from vfmkd_ray import storage

MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limits
MAX_METRICS_PER_CALL = 1000
MAX_PARAM_LENGTH = 6000  # MLflow's longest param value
# A dead server must cost seconds, not MLflow's default minutes of retries with backoff (set in
# this process's environment, where MLflow reads them; a variable already set wins).
FAST_FAILURE_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class Backend(Protocol):
    run_id: str

    def log_params(self, params: dict[str, str]) -> None: ...
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_file(self, name: str, data: bytes) -> None: ...
    def end(self, status: str) -> None: ...
    def end_open_children(self, status: str) -> None: ...
    def end_run(self, run_id: str, status: str) -> None: ...


class MlflowBackend:
    """One MLflow run through ``MlflowClient`` (no global active-run state, so runs of several
    threads or trials never mix)."""

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        run_name: str,
        resume_id: str | None = None,
        parent_id: str | None = None,
        tags: dict[str, str] | None = None,
    ):
        for key, value in FAST_FAILURE_ENV.items():
            os.environ.setdefault(key, value)
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise RuntimeError(
                "tracking.backend mlflow needs the MLflow client: pip install 'vfmkd_ray[mlflow]'"
            ) from None
        self.client = MlflowClient(tracking_uri=uri)
        if resume_id is not None:
            self.run_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            return
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run_tags = dict(tags or {})
        if parent_id:
            run_tags["mlflow.parentRunId"] = parent_id  # how MLflow nests a child under its parent
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value[:MAX_PARAM_LENGTH]) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_CALL])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), MAX_METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=items[start : start + MAX_METRICS_PER_CALL])

    def log_file(self, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as directory:
            local = Path(directory, name)
            local.write_bytes(data)
            self.client.log_artifact(self.run_id, str(local))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def end_open_children(self, status: str) -> None:
        experiment = self.client.get_run(self.run_id).info.experiment_id
        query = f"tags.mlflow.parentRunId = '{self.run_id}' and attributes.status = 'RUNNING'"
        for child in self.client.search_runs([experiment], filter_string=query):
            self.client.set_terminated(child.info.run_id, status)


class TensorboardBackend:
    """Event files of one run. Written locally (tensorboardX's writer needs a filesystem) and,
    for a run on object storage, copied into it after every epoch."""

    run_id = ""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self.destination = logdir
        self.local = logdir if not storage.is_remote(logdir) else tempfile.mkdtemp(prefix="vfmkd-tb-")
        self.writer = SummaryWriter(logdir=self.local, flush_secs=3600)

    def log_params(self, params: dict[str, str]) -> None:
        table = "\n".join(f"| {key} | {value} |" for key, value in params.items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + table, global_step=0)
        self._flush()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), global_step=step)
        self._flush()

    def log_file(self, name: str, data: bytes) -> None:
        """The run directory already holds the run's files: nothing to copy."""

    def end(self, status: str) -> None:
        self.writer.close()
        self._copy_out()
        if self.local != self.destination:
            shutil.rmtree(self.local, ignore_errors=True)

    def end_open_children(self, status: str) -> None:
        """TensorBoard has no runs to end."""

    def end_run(self, run_id: str, status: str) -> None:
        """TensorBoard has no runs to end."""

    def _flush(self) -> None:
        self.writer.flush()
        self._copy_out()

    def _copy_out(self) -> None:
        if self.local == self.destination:
            return
        for path in Path(self.local).glob("events.out.tfevents.*"):
            storage.write_bytes_atomic(storage.join(self.destination, path.name), path.read_bytes())
