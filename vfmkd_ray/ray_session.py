"""Connecting to Ray: the cluster in ``RAY_ADDRESS`` if set, otherwise a local one."""

from __future__ import annotations

import logging
import math
import os

import ray
import ray.data

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError, ExperimentConfig
from vfmkd_ray.console import shows_ray_output
from vfmkd_ray.object_storage import forwarded_env, secrets_left_behind

log = logging.getLogger(__name__)
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a submitted job
# A local Ray keeps an idle worker process for 10 minutes where Ray keeps it 1 s once idle workers
# outnumber the free CPUs. Beside Train workers that hold most CPUs they always do between two
# passes, so each epoch started its read/decode workers afresh, importing torch again beside the
# first training steps: 1.6 s to an epoch's first batch instead of 0.6 (docs/performance.md). The
# pool stays as large as the busiest moment of the last 10 minutes. (Benchmarks and tests that
# start their own local Ray use the same settings, so that they measure what a user runs.)
IDLE_WORKER_KEEP_MS = 600_000


def local_ray_system_config() -> dict:
    """A fresh dict each call: Ray keeps the one it is given and writes its session's spill
    directory into it, which a later Ray of the same process would then inherit."""
    return {"idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_MS}


_started_here: list[bool] = []  # whether ensure_ray started this process's Ray


def ensure_ray(min_local_cpus: float = 0, state_api: bool = False) -> None:
    """Initialises Ray once per process; a job submitted to a cluster joins that cluster.

    A local Ray gets at least ``min_local_cpus`` logical CPUs: Train workers reserve whole CPUs,
    and on a small workstation Ray Data's read and decode tasks would otherwise never be scheduled.
    ``state_api``: a local Ray starts its dashboard, whose state API Ray Train's placement-group
    cleaner asks whether a run's controller is gone; without it, each Tune trial's worker group kept
    its CPUs after the trial ended, and the third trial of a search on a small machine never got a
    CPU for its data.
    """
    quiet_ray_data()
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    num_cpus = None if address else max(os.cpu_count() or 1, math.ceil(min_local_cpus))
    # A local Ray started here inherits this process's environment, keys included. A cluster gets
    # the non-secret settings only: Ray logs runtime-env variables in clear text. In a submitted
    # job the job's runtime env already carries them, and Ray refuses a driver runtime env that
    # sets the same variables again.
    env = forwarded_env() if address and JOB_CONFIG_ENV not in os.environ else {}
    ray.init(
        address=address,
        num_cpus=num_cpus,
        # A local Ray lives as long as this command: its dashboard would cost seconds to start and
        # a share of a workstation's CPUs, unless its state API is needed. To watch one, start
        # `ray start --head` and set RAY_ADDRESS.
        include_dashboard=state_api if not address else None,
        runtime_env={"env_vars": env} if env else None,
        _system_config=None if address else local_ray_system_config(),
        # Workers' and Ray's own processes' output stays in the session's log files: rank 0's
        # lines reach the console through training.relay. --verbose forwards it all.
        log_to_driver=shows_ray_output(),
        logging_level=logging.WARNING,
    )
    _started_here.append(True)
    if not shows_ray_output():
        _raylet_messages_to_stderr()
    resources = ray.cluster_resources()
    log.info(
        "Ray %s: %s, %g CPUs, %g GPUs; %s",
        ray.__version__,
        address or "local",
        resources.get("CPU", 0),
        resources.get("GPU", 0),
        f"forwarding {', '.join(sorted(env))}" if env else "workers inherit this environment",
    )
    if env and (kept := secrets_left_behind()):  # a job's driver already runs on the cluster
        log.warning(
            "%s not sent to the cluster (Ray would log the values): its nodes need their own, an "
            "instance role, or AWS_SHARED_CREDENTIALS_FILE naming a mounted credentials file",
            ", ".join(kept),
        )


def stop_ray_started_here() -> None:
    """Shuts down the Ray this process started, while the command's console still holds stderr:
    Ray's last messages (the raylet's, arriving during shutdown) go to the log file too."""
    if _started_here and ray.is_initialized():
        ray.shutdown()
    _started_here.clear()


def _raylet_messages_to_stderr() -> None:
    """Ray 2.60's driver prints the raylet's messages (worker-pool pressure, tasks killed for
    memory) to stdout whatever ``log_to_driver`` says, through ``print_to_stdstream``, which its
    error listener looks up at each message. Marked as errors they go to stderr instead, which the
    console keeps in the command's log file (Ray is pinned: tests/test_progress.py checks the hook)."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "to_stderr", False):
        return

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr.to_stderr = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_stderr


def quiet_ray_data() -> None:
    """Ray Data's operator tables and bars drown the product's lines: off unless verbose. Set in
    the driver's context, which every dataset built here (and its training split) carries."""
    context = ray.data.DataContext.get_current()
    shown = shows_ray_output()
    context.enable_progress_bars = shown
    context.print_on_execution_start = shown


def require_shared_paths(cfg: ExperimentConfig, num_nodes: int | None = None) -> None:
    """On a cluster of several nodes, every location must be reachable from every node: object
    storage, or local paths the config declares shared (``train.shared_filesystem``)."""
    num_nodes = num_nodes if num_nodes is not None else len([n for n in ray.nodes() if n.get("Alive")])
    if num_nodes <= 1 or cfg.train.shared_filesystem:
        return
    local = {
        key: uri
        for key, uri in (
            ("data.root", cfg.data.root),
            ("store.root", cfg.store.root),
            ("train.storage_path", cfg.train.storage_path),
        )
        if not storage.is_remote(uri)
    }
    if local:
        raise ConfigError(
            f"the Ray cluster has {num_nodes} nodes but {', '.join(f'{k}={v}' for k, v in local.items())} "
            "is a local path the other nodes cannot see: use s3:// URIs, or set "
            "train.shared_filesystem=true if it is on a filesystem every node mounts"
        )


def on_this_node() -> dict:
    """Actor options that place it on the driver's node: a driver's helper actor (the relay's
    mailbox, the data position) must not die with a worker node a cluster loses."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {
        "scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        )
    }
