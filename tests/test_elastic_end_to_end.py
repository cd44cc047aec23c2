"""Elastic training on a real 2-node cluster on 127.0.0.1: the worker node is killed mid-epoch
(SIGKILL to its raylet and workers), the group shrinks to one worker and resumes from the latest
checkpoint with the lock-step plan of its new size; the node comes back, the group grows again,
and the run finishes, saying what it repeated.

The group is held (``VFMKD_HOLD_AFTER_STEP``) where the node is lost and where it comes back: tiny
steps take a fraction of a second, so unheld, the shrunk group could finish the run before the node
is back, and steps reported but not yet committed when the group is torn down would be repeated."""

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from tests.local_cluster import kill_node, process_stat, start_head, start_worker, stop_node, wait_for_nodes
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.training.fault_injection import HOLD_ENV, SAMPLE_TRACE_ENV
from vfmkd_ray.training.trainer import run_training

pytestmark = pytest.mark.ray


def _workers(trace: Path) -> set[tuple[int, str]]:
    """(pid, start time) of every worker process that traced a step so far, of any rank."""
    pids = {int(file.name.split("pid")[1].split(".")[0]) for file in trace.glob("rank*.pid*.txt")}
    return {(pid, stat[19]) for pid in pids if (stat := process_stat(pid)) is not None}


def _running(worker: tuple[int, str]) -> bool:
    """Still that process (not a later one with its pid), and not a zombie."""
    stat = process_stat(worker[0])
    return stat is not None and stat[19] == worker[1] and stat[0] != "Z"


def _resumed(caplog) -> list[str]:
    """The run's "resumed epoch ..." lines so far (from the training thread)."""
    return [line for r in list(caplog.records) if (line := r.getMessage()).startswith("resumed epoch")]


def _wait(condition, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_a_lost_node_shrinks_the_group_and_its_return_grows_it(tmp_path, monkeypatch, caplog):
    trace = tmp_path / "trace"
    trace.mkdir()
    monkeypatch.setenv(SAMPLE_TRACE_ENV, str(trace))  # the nodes started below inherit these
    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv(HOLD_ENV, str(hold))
    lose_at = hold / "2.3"  # the 2-worker group (4 steps per epoch), a step past epoch 2's checkpoint
    grow_at = hold / "3.2"  # the 1-worker group (9 steps per epoch), at epoch 3's checkpoint
    lose_at.touch()
    grow_at.touch()
    # A lost node is known to the head after 3 failed health checks 0.5 s apart (Ray's defaults:
    # 5 at 3 s), so the shrunk group is planned for the node that is left; and a group that waits
    # for a node Ray still counts gives up after 20 s, not 60 (each was a minute of this test).
    monkeypatch.setenv("RAY_health_check_period_ms", "500")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "3")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
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
            _wait(
                lambda: len(list(hold.glob("2.3.held.*"))) == 2, "the 2-worker group held at epoch 2 step 3"
            )
            first_group = _workers(trace)
            kill_node(nodes.pop())
            # The head node's worker of that group stays held until Ray tears the group down.
            _wait(lambda: not any(map(_running, first_group)), "the 2-worker group to be torn down")
            lose_at.unlink()
            _wait(lambda: (hold / "3.2.held.rank0").exists(), "the 1-worker group held at epoch 3 step 2")
            nodes.append(start_worker(address, num_cpus=2))
            _wait(lambda: any("(2 workers x batch" in line for line in _resumed(caplog)), "the group to grow")
            grow_at.unlink()
            training.join(timeout=600)
        assert not training.is_alive(), "the run finished"
    finally:
        for marker in (lose_at, grow_at):  # nothing left held if a wait above failed
            marker.unlink(missing_ok=True)
        ray.shutdown()
        for node in nodes:
            stop_node(node)
        stop_node(head)
    summary = outcome["summary"]
    sizes = [record["world_size"] for record in summary.history]
    assert [r["epoch"] for r in summary.history] == [1, 2, 3]
    assert sizes == [2, 1, 2], "world size per epoch"
    # Step 3 of epoch 2, past the checkpoint of step 2, is the only one trained twice: the grow came
    # at a committed checkpoint.
    assert summary.history[-1]["train/steps_repeated"] == 1
    resized = _resumed(caplog)
    print("\n".join(["", *resized]))  # with -s: the resize as the log says it
    assert len(resized) == 2, resized
    assert resized[0].startswith("resumed epoch 2 at step 4 (1 workers x batch 2"), resized
    assert resized[-1].startswith("resumed epoch 3 at step 1 (2 workers x batch 2"), resized
