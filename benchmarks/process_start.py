"""What a Ray process of this product pays before it does any work: the wall seconds of
``python -c "import <module>"`` for the modules each kind of process loads.

A run starts about a dozen processes (Ray Train's controller and workers, Ray Data's split
coordinators, read and decode tasks, the relay's mailbox and the data position), each of which
imports what it unpickles; on a small node these seconds, not the steps, decide how long a short
run or a test takes. Measured in fresh interpreters (the OS file cache warm after the first):

- ``vfmkd_ray.config``: what every process that reads a config imports;
- ``vfmkd_ray.training.relay``, ``vfmkd_ray.training.data_position``: the driver's two helper actors;
- ``vfmkd_ray.data.pipeline``, ``vfmkd_ray.store.ray_source``: the decode and read tasks;
- ``vfmkd_ray.training.worker``: a Train worker (torch, the model and its heads);
- ``vfmkd_ray.store.precompute``: the precompute driver and its teacher actors;
- ``vfmkd_ray.cli``: every ``vfmkd`` command;
- ``torch``: the floor any torch process pays.

    python -m benchmarks.process_start [--repeats 3]

``make bench`` runs it as ``process_start``.
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.figures import Figure, argument_parser

SECTION = "process start (imports)"
MODULES = (
    "vfmkd_ray.config",
    "vfmkd_ray.training.relay",
    "vfmkd_ray.training.data_position",
    "vfmkd_ray.data.pipeline",
    "vfmkd_ray.store.ray_source",
    "vfmkd_ray.training.worker",
    "vfmkd_ray.store.precompute",
    "vfmkd_ray.cli",
    "torch",
)


def import_seconds(module: str) -> float:
    """Wall seconds of a fresh interpreter that imports ``module`` and exits."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)
    return time.perf_counter() - started


def run(root: str, argv: list[str]) -> list[Figure]:
    parser = argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import_seconds("vfmkd_ray.training.worker")  # warms the OS file cache for every module below
    return [
        Figure(SECTION, f"import {module}", "s", [import_seconds(module) for _ in range(args.repeats)])
        for module in MODULES
    ]


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
