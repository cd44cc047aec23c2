"""A Train worker killed by SIGKILL inside an epoch, with in-epoch checkpoints: the run resumes
from the last checkpoint inside that epoch, repeats at most one interval of steps, trains on no
sample twice in an epoch beyond them, and says how many steps it repeated. The training stream is
shuffled per epoch (``data.shuffle``): the resumed epoch still trains each sample once, and the two
epochs' orders differ."""

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from vfmkd_ray import run_files
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.training.fault_injection import KILL_ONCE_ENV, SAMPLE_TRACE_ENV
from vfmkd_ray.training.trainer import run_training

pytestmark = pytest.mark.ray
INTERVAL = 2
KILL_AT = (1, 5)  # epoch 1, after step 5: one step past the checkpoint of step 4


def _trace(directory: Path) -> dict[int, list[tuple[int, list[int]]]]:
    """Epoch -> (step, sample keys) of every step any worker process took, in file order."""
    steps = defaultdict(list)
    for file in sorted(directory.glob("rank*.txt")):
        for line in file.read_text().splitlines():
            epoch, step, *keys = map(int, line.split())
            steps[epoch].append((step, keys))
    return steps


def _first_uses(taken: list[tuple[int, list[int]]]) -> list[int]:
    """The sample keys of an epoch in the order its steps first used them."""
    order = [key for _, keys in sorted(taken, key=lambda step_keys: step_keys[0]) for key in keys]
    return list(dict.fromkeys(order))


def test_a_sigkilled_worker_resumes_inside_the_epoch_repeating_one_interval_at_most(tmp_path, monkeypatch):
    trace = tmp_path / "trace"
    trace.mkdir()
    # A local Ray started here inherits the environment, the Train workers included.
    monkeypatch.setenv(KILL_ONCE_ENV, f"{KILL_AT[0]}:{KILL_AT[1]}:{tmp_path / 'killed'}")
    monkeypatch.setenv(SAMPLE_TRACE_ENV, str(trace))
    cfg = load_config(
        None,
        [
            *tiny_overrides(tmp_path),
            "data.synthetic.num_images=32",
            "store.views_per_image=2",
            "store.augment=hflip",
            f"train.checkpoint_every_steps={INTERVAL}",
            "data.shuffle=true",
            "data.shuffle_buffer=4",  # two batches per worker
        ],
    )
    write_synthetic_coco(cfg.data)
    import ray

    try:
        run_precompute(cfg)  # starts the local Ray, which inherits the environment above
        summary = run_training(cfg)
    finally:
        ray.shutdown()
    assert (tmp_path / "killed").exists(), "the worker was killed"
    assert [r["epoch"] for r in summary.history] == [1, 2]
    per_epoch, ranks = summary.steps_per_epoch, cfg.train.max_workers
    global_batch = cfg.train.batch_size * ranks
    orders = {}
    for epoch, taken in _trace(trace).items():
        orders[epoch] = _first_uses(taken)
        lines_per_step = Counter(step for step, _ in taken)  # a line per rank per attempt
        assert set(lines_per_step) == set(range(1, per_epoch + 1)), f"epoch {epoch}: every step taken"
        repeated = sorted(step for step, n in lines_per_step.items() if n > ranks)
        uses = Counter(key for _, step_keys in taken for key in step_keys)
        used_again = sum(n - 1 for n in uses.values())
        if epoch == KILL_AT[0]:
            # Resumed from the checkpoint of step 4: step 5 again, nothing before it.
            assert repeated == [5] and len(repeated) <= INTERVAL
            assert used_again <= len(repeated) * global_batch, "no sample twice beyond the repeated steps"
            assert summary.history[0]["train/steps_repeated"] == len(repeated)
        else:
            assert not repeated and used_again == 0
    assert summary.history[1]["train/steps_repeated"] == summary.history[0]["train/steps_repeated"]
    # A sanity check only: Ray's streaming split and the resume reorder an unshuffled run too. The
    # order itself is pinned by tests/data/test_epoch_order.py and tests/training/test_read_once.py.
    both = set(orders[1]) & set(orders[2])
    assert len(both) >= 8, "the epochs train on the same images"
    assert [k for k in orders[1] if k in both] != [k for k in orders[2] if k in both], "an order per epoch"
    # An epoch not interrupted reads about what it uses (the one row drop_last leaves, aside).
    assert 1.0 <= summary.history[1]["data/read_per_used"] < 1.1
    log = Path(run_files.path(summary.run_dir, run_files.METRICS_JSONL)).read_text()
    assert '"train/steps_repeated": 1' in log
