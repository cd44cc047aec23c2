"""Rank 0's tracking of one run (or a tune's parent run), guarded: a tracking server that is down
or refuses a call is one warning naming the backend, the URI and the cause, and tracking stops for
the rest of the run. The run itself goes on; its ``metrics.csv`` holds everything.

A relaunched run continues its MLflow run: the run id is kept in the run directory
(``run_files.TRACKING_FILE``); params are logged by the first launch only (MLflow refuses a param
that changes value). A kept id the server no longer knows starts a new run, with a warning.

With ``background``, every call runs in order on one thread of its own, so a slow server never
holds rank 0 (and, at the next collective, every rank); ``finish`` waits for what is queued.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from vfmkd_ray import run_files, storage
from vfmkd_ray.ray_errors import first_line
from vfmkd_ray.tracking.backends import Backend, MlflowBackend, TensorboardBackend

if TYPE_CHECKING:
    from vfmkd_ray.config import ExperimentConfig

NOT_PARAMS = ("s3",)  # never sent: the S3 section (endpoint and keys)
SEARCH_PREFIX = "search."  # a tune trial's searched values, as params of their own
MAX_CAUSE = 300  # characters of a tracker's error quoted in a warning


class RunTracker:
    def __init__(
        self,
        cfg: ExperimentConfig,
        directory: str,
        warn: Callable[[str], None],
        run_name: str | None = None,
        parent_id: str | None = None,
        searched: dict[str, Any] | None = None,
        background: bool = False,
    ):
        self.settings = cfg.tracking
        self.directory, self.warn = directory, warn
        self.backend: Backend | None = None
        self.run_id: str | None = None  # the tracker's id of the run, kept after finish
        self._pool: ThreadPoolExecutor | None = None
        if self.settings.backend == "none":
            return
        if background:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vfmkd-tracking")
        name = run_name or cfg.name
        self._run(lambda: self._guarded("start", lambda: self._start(cfg, name, parent_id, searched or {})))

    def epoch(self, record: dict[str, float]) -> None:
        """One epoch's record; its ``epoch`` is the step. Non-finite values are not sent."""
        metrics = {
            key: value
            for key, value in record.items()
            if key != "epoch" and isinstance(value, int | float) and math.isfinite(value)
        }
        self._call("log metrics", lambda b: b.log_metrics(int(record["epoch"]), metrics))

    def attach(self, names: list[str]) -> None:
        """The run directory's files ``names`` (those that exist) as artifacts."""
        for name in names:
            uri = run_files.path(self.directory, name)
            if self.backend is not None and storage.exists(uri):
                self._call(f"attach {name}", lambda b, n=name, u=uri: b.log_file(n, storage.read_bytes(u)))

    def result(self, metrics: dict[str, float], params: dict[str, Any]) -> None:
        """A whole search's outcome on its parent run (step 0)."""
        self._call("log the result", lambda b: b.log_metrics(0, metrics))
        self._call("log the result", lambda b: b.log_params({k: str(v) for k, v in params.items()}))

    def end_run(self, run_id: str, status: str) -> None:
        """Another run of the same tracker (a tune trial's, whose rank 0 Tune stopped) as ``status``."""
        self._call("end a trial's run", lambda b: b.end_run(run_id, status))

    def end_open_children(self) -> None:
        """Child runs still RUNNING (trials stopped early or killed: their rank 0 never ended
        them) become KILLED."""
        self._call("end the trials' runs", lambda b: b.end_open_children("KILLED"))

    def finish(self, status: str = "FINISHED") -> None:
        self._call("end the run", lambda b: b.end(status))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.backend = None

    def _start(self, cfg: ExperimentConfig, run_name: str, parent_id: str | None, searched: dict) -> None:
        kept = run_files.read_tracking_record(self.directory) or {}
        where = {
            "backend": self.settings.backend,
            "uri": self.settings.uri,
            "experiment": self.settings.experiment,
        }
        resume_id = kept.get("run_id") if all(kept.get(k) == v for k, v in where.items()) else None
        try:
            backend = self._open(run_name, resume_id, parent_id)
        except Exception as err:
            if resume_id is None:
                raise
            self.warn(
                f"tracking: cannot continue run {resume_id} ({first_line(err)[:MAX_CAUSE]}); a new run starts"
            )
            resume_id, backend = None, self._open(run_name, None, parent_id)
        if resume_id is None:
            backend.log_params(config_params(cfg, searched))
            run_files.write_tracking_record(self.directory, where | {"run_id": backend.run_id})
        self.backend, self.run_id = backend, backend.run_id or None

    def _open(self, run_name: str, resume_id: str | None, parent_id: str | None) -> Backend:
        if self.settings.backend == "mlflow":
            return MlflowBackend(
                self.settings.uri,
                self.settings.experiment,
                run_name,
                resume_id=resume_id,
                parent_id=parent_id,
                tags={"vfmkd.directory": self.directory},
            )
        logdir = self.settings.uri or run_files.path(self.directory, run_files.TENSORBOARD_DIR)
        return TensorboardBackend(logdir)

    def _call(self, what: str, action: Callable[[Backend], object]) -> None:
        def call() -> None:
            if self.backend is not None:
                backend = self.backend
                self._guarded(what, lambda: action(backend))

        self._run(call)

    def _run(self, work: Callable[[], None]) -> None:
        if self._pool is not None:
            self._pool.submit(work)
        else:
            work()

    def _guarded(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as err:
            where = self.settings.uri or "its default location"
            cause = first_line(err)[:MAX_CAUSE]
            self.warn(
                f"tracking ({self.settings.backend} at {where}) stopped, could not {what}: {cause}. "
                f"The run goes on; its metrics are in {self.directory}"
            )
            self.backend = None


def config_params(cfg: ExperimentConfig, searched: dict[str, Any]) -> dict[str, str]:
    """The resolved config as flat dotted params (the S3 section left out), and the searched values."""
    raw = cfg.model_dump(mode="json")
    for section in NOT_PARAMS:
        raw.pop(section, None)
    params: dict[str, str] = {}
    _flatten(raw, "", params)
    params.update({f"{SEARCH_PREFIX}{key}": str(value) for key, value in searched.items()})
    return params


def _flatten(node: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}.", out)
    else:
        out[prefix.rstrip(".")] = str(node)
