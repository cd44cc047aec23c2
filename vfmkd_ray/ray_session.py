"""Connecting to Ray: the cluster in ``RAY_ADDRESS`` if set, otherwise a local one."""

from __future__ import annotations

import logging
import math
import os

import ray

from vfmkd_ray.object_storage import forwarded_env

log = logging.getLogger(__name__)


def ensure_ray(min_local_cpus: float = 0) -> None:
    """Initialises Ray once per process; a job submitted to a cluster joins that cluster.

    A local Ray gets at least ``min_local_cpus`` logical CPUs: Train workers reserve whole CPUs,
    and on a small workstation Ray Data's read and decode tasks would otherwise never be scheduled.
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    num_cpus = None if address else max(os.cpu_count() or 1, math.ceil(min_local_cpus))
    env = forwarded_env()  # object-storage settings must reach every worker
    ray.init(
        address=address,
        num_cpus=num_cpus,
        runtime_env={"env_vars": env} if env else None,
        log_to_driver=True,
        logging_level=logging.WARNING,
    )
    resources = ray.cluster_resources()
    log.info(
        "Ray %s: %s, %g CPUs, %g GPUs; forwarding %s",
        ray.__version__,
        address or "local",
        resources.get("CPU", 0),
        resources.get("GPU", 0),
        ", ".join(sorted(env)) or "no AWS settings",
    )
