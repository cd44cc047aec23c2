"""Elastic training on a real 2-node cluster on 127.0.0.1: the worker node is killed mid-epoch
(SIGKILL to its raylet and workers), the group shrinks to one worker and resumes from the latest
checkpoint with the lock-step plan of its new size; the node comes back, the group grows again,
and the run finishes, saying what it repeated."""

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from tests.local_cluster import kill_node, start_head, start_worker, stop_node, wait_for_nodes
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.train.fault_injection import SAMPLE_TRACE_ENV
from vfmkd_ray.train.trainer import run_training

pytestmark = pytest.mark.ray


def _steps_seen(trace: Path) -> list[tuple[int, int, int]]:
    """(pid, epoch, step) of every step rank 0 took, in file order."""
    seen = []
    for file in trace.glob("rank0.pid*.txt"):
        pid = int(file.name.split("pid")[1].split(".")[0])
        seen += [(pid, *map(int, line.split()[:2])) for line in file.read_text().splitlines()]
    return seen


def _wait(condition, what: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_a_lost_node_shrinks_the_group_and_its_return_grows_it(tmp_path, monkeypatch, caplog):
    trace = tmp_path / "trace"
    trace.mkdir()
    monkeypatch.setenv(SAMPLE_TRACE_ENV, str(trace))  # the nodes started below inherit it
    head, address, _, _ = start_head(num_cpus=2)
    nodes = [start_worker(address, num_cpus=2)]
    cfg = load_config(
        None,
        [
            *tiny_overrides(tmp_path),
            "data.synthetic.num_images=24",
            "train.epochs=3",
            "train.num_workers=[1,2]",
            "train.cpus_per_worker=1.5",  # one Train worker per 2-CPU node
            "train.checkpoint_every_steps=2",
            "train.elastic_resize_interval_s=5",
            "train.max_failures=3",
            "train.shared_filesystem=true",  # both nodes are this machine
        ],
    )
    write_synthetic_coco(cfg.data)
    monkeypatch.setenv("RAY_ADDRESS", address)
    import ray

    outcome = {}
    try:
        ray.init(address=address, logging_level="ERROR")
        wait_for_nodes(2)
        run_precompute(cfg)
        training = threading.Thread(target=lambda: outcome.update(summary=run_training(cfg)), daemon=True)
        with caplog.at_level("INFO", logger="vfmkd_ray"):
            training.start()
            # Mid-epoch 2, after the checkpoint at its step 2: lose the worker node.
            _wait(lambda: any(e == 2 and s >= 3 for _, e, s in _steps_seen(trace)), "epoch 2 step 3")
            kill_node(nodes.pop())
            # The group shrinks to one worker (a new rank-0 process), then the node comes back.
            first_pids = {pid for pid, _, _ in _steps_seen(trace)}
            _wait(lambda: {pid for pid, _, _ in _steps_seen(trace)} - first_pids, "the shrunk group's steps")
            nodes.append(start_worker(address, num_cpus=2))
            training.join(timeout=600)
        assert not training.is_alive(), "the run finished"
    finally:
        ray.shutdown()
        for node in nodes:
            stop_node(node)
        stop_node(head)
    summary = outcome["summary"]
    sizes = [record["world_size"] for record in summary.history]
    assert [r["epoch"] for r in summary.history] == [1, 2, 3]
    assert 1 in sizes and sizes[-1] == 2, f"world size per epoch: {sizes}"
    assert summary.history[-1]["train/steps_repeated"] <= 2 * 2, "at most an interval per restart"
    lines = [r.getMessage() for r in caplog.records]
    resized = [line for line in lines if line.startswith("resumed epoch")]
    print("\n".join(["", *resized]))  # with -s: the resize as the log says it
    assert any("1 workers x batch 2" in line for line in resized), lines
    assert any("2 workers x batch 2" in line for line in resized), lines
