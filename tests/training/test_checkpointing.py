"""The checkpoint owner and the training state (Ray-free: Ray Train's reports on a local folder)."""

import json
import math
import shutil
from pathlib import Path

import pyarrow.fs
import pytest
import torch

from vfmkd_ray import run_files
from vfmkd_ray.training.checkpointing import CheckpointManager
from vfmkd_ray.training.schedule import LrSchedule, ScheduleSpec
from vfmkd_ray.training.state import STATE_PART, TrainingState


class FolderReports:
    """Ray Train's side of reporting, on a folder: a report with a checkpoint makes it the latest."""

    def __init__(self, root: Path):
        self.root, self.records, self.checkpoints = root, [], []

    def latest(self):
        return (pyarrow.fs.LocalFileSystem(), self.checkpoints[-1]) if self.checkpoints else None

    def report(self, record, directory):
        self.records.append(record)
        if directory is not None:
            kept = self.root / f"checkpoint_{len(self.checkpoints):06d}"
            shutil.move(directory, kept)
            self.checkpoints.append(str(kept))


class Counter:
    """A stateful part the manager has never heard of (the next ones: an EMA, the data order)."""

    def __init__(self, count: int = 0):
        self.count = count

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def _parts(count: int = 0):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": LrSchedule(optimizer, ScheduleSpec(total_steps=10, steps_per_epoch=5)),
        "extra": Counter(count),
    }


def test_any_stateful_part_round_trips_inside_and_at_the_end_of_an_epoch(tmp_path):
    reports = FolderReports(tmp_path)
    run_dir = str(tmp_path / "run")
    state, parts = TrainingState(), _parts(count=3)
    manager = CheckpointManager(0, run_dir, reports)
    assert manager.restore_state() == TrainingState() and not manager.restore(parts)

    parts["scheduler"].step()
    snapshot = state.in_epoch(2, 2, 8, [5, -6], {"loss": (1.5, 2.0)})
    manager.report_inside_epoch({"epoch": 0, "epoch_step": 2}, {**parts, STATE_PART: snapshot})
    resumed = CheckpointManager(0, run_dir, reports)
    again = _parts()
    assert resumed.restore_state() == snapshot and resumed.restore(again)
    assert again["extra"].count == 3 and again["scheduler"].steps == 1
    assert torch.equal(again["model"].weight, parts["model"].weight)

    parts["extra"].count = 7
    record = {"epoch": 1, "step": 4, "val/loss": 0.5}
    improved = state.finish_epoch(4, record)
    written = []
    manager.report_epoch_end(record, {**parts, STATE_PART: state}, state, improved, lambda: written.append(1))
    assert improved and written == [1]
    assert [json.loads(line) for line in Path(run_dir, run_files.METRICS_JSONL).read_text().splitlines()] == [
        record
    ]
    latest = CheckpointManager(0, run_dir, reports)
    after = _parts()
    restored = latest.restore_state()
    assert latest.restore(after) and after["extra"].count == 7
    assert (restored.epoch, restored.step, restored.history, restored.epoch_trained) == (1, 4, [record], [])
    assert reports.records == [{"epoch": 0, "epoch_step": 2}, record]


def test_other_ranks_report_without_a_checkpoint_or_files(tmp_path):
    reports = FolderReports(tmp_path)
    manager = CheckpointManager(1, str(tmp_path / "run"), reports)
    state = TrainingState()
    improved = state.finish_epoch(3, {"epoch": 1, "val/loss": 1.0})
    manager.report_epoch_end({"epoch": 1}, _parts(), state, improved, lambda: pytest.fail("rank 1 wrote"))
    assert reports.records == [{"epoch": 1}] and reports.checkpoints == []
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_without_a_part_the_run_lists_is_named(tmp_path):
    reports = FolderReports(tmp_path)
    before = {name: part for name, part in _parts().items() if name != "extra"}  # an older version's
    CheckpointManager(0, str(tmp_path / "run"), reports).report_inside_epoch({}, before)
    with pytest.raises(run_files.RunFileError, match=r"checkpoint .*checkpoint_000000 has no 'extra' state"):
        CheckpointManager(0, str(tmp_path / "run"), reports).restore(_parts())


def test_a_part_that_does_not_fit_the_checkpoint_is_named(tmp_path):
    """An optimiser saved with one parameter group (before the groups) into one with three: the
    error names the part and the checkpoint, not torch's bare ValueError."""
    reports = FolderReports(tmp_path)
    CheckpointManager(0, str(tmp_path / "run"), reports).report_inside_epoch({}, _parts())
    grouped = _parts()
    model = grouped["model"]
    grouped["optimizer"] = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias]}])
    with pytest.raises(run_files.RunFileError, match=r"checkpoint_000000's 'optimizer' state does not fit"):
        CheckpointManager(0, str(tmp_path / "run"), reports).restore(grouped)


def test_the_schedule_follows_the_plan_it_is_built_with():
    """A relaunch with more epochs or a resize builds the schedule over its new plan: the rate of a
    step is a function of the step and the plan, never patched afterwards."""
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    schedule = LrSchedule(optimizer, ScheduleSpec(total_steps=10, steps_per_epoch=5))
    rates = [schedule.get_last_lr()[0]]
    for _ in range(10):
        schedule.step()
        rates.append(schedule.get_last_lr()[0])
    assert rates[0] == 1.0 and rates[5] == pytest.approx(0.5) and rates[10] == pytest.approx(0.0, abs=1e-12)
    torch_cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0), T_max=10
    )
    for _ in range(4):
        torch_cosine.optimizer.step()
        torch_cosine.step()
    longer = LrSchedule(
        torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0),
        ScheduleSpec(total_steps=20, steps_per_epoch=5),
    )
    longer.load_state_dict(torch_cosine.state_dict())  # a checkpoint of the schedule before this one
    assert longer.steps == 4
    assert longer.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 20)))


def test_a_failed_best_file_write_leaves_no_epoch_in_the_log_that_no_checkpoint_holds(tmp_path):
    """A full disk at epoch 2's best files: the log still ends at epoch 1, as the checkpoints do,
    so a relaunch resumes from epoch 1 with a log that agrees."""
    reports, run_dir = FolderReports(tmp_path), str(tmp_path / "run")
    state, parts = TrainingState(), _parts()
    manager = CheckpointManager(0, run_dir, reports)
    first = {"epoch": 1, "step": 4, "val/loss": 0.5}
    manager.report_epoch_end(
        first, {**parts, STATE_PART: state}, state, state.finish_epoch(4, first), lambda: None
    )

    def disk_full():
        raise OSError(28, "No space left on device")

    second = {"epoch": 2, "step": 8, "val/loss": 0.25}
    with pytest.raises(OSError, match="No space left"):
        manager.report_epoch_end(
            second, {**parts, STATE_PART: state}, state, state.finish_epoch(4, second), disk_full
        )
    assert [r["epoch"] for r in run_files.read_metrics_log(run_dir)] == [1]
    assert len(reports.checkpoints) == 1


def _old_checkpoint(root: Path) -> str:
    """A checkpoint as vfmkd wrote it before the checkpoint owner (``run_files.save_training_state``
    at 1009df0): the modules' state dicts, torch's CosineAnnealingLR, and ``counters``."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    for _ in range(3):
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        cosine.step()
    counters = {
        "epoch": 1,
        "step": 3,
        "best_val_loss": 0.75,
        "history": [{"epoch": 1, "val/loss": 0.75}],
        "epoch_step": 0,
        "epoch_samples": 0,
        "epoch_trained": torch.tensor([], dtype=torch.int64),
        "epoch_sums": {},
    }
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": cosine.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "counters": counters,
    }
    directory = root / "checkpoint_000000"
    directory.mkdir()
    torch.save(payload, directory / run_files.STATE_FILE)
    return str(directory)


class OneCheckpoint(FolderReports):
    def __init__(self, root: Path, checkpoint: str):
        super().__init__(root)
        self.checkpoints.append(checkpoint)


def test_a_checkpoint_of_the_loop_before_the_owner_resumes_and_is_then_let_go(tmp_path):
    reports = OneCheckpoint(tmp_path, _old_checkpoint(tmp_path))
    manager = CheckpointManager(0, str(tmp_path / "run"), reports)
    state = manager.restore_state()
    assert (state.epoch, state.step, state.best_metric, state.best_value, state.epoch_trained) == (
        1,
        3,
        "val/loss",
        0.75,
        [],
    )
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    parts = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": LrSchedule(optimizer, ScheduleSpec(total_steps=10, steps_per_epoch=5)),
        "scaler": torch.amp.GradScaler("cpu", enabled=False),
    }
    assert manager.restore(parts)
    assert parts["scheduler"].steps == 3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * 3 / 10)))
    assert optimizer.state_dict()["state"][0]["step"] == 3
    # The worker holds no second copy of the model and optimiser for the rest of its run.
    assert manager._latest is None


def test_an_unreadable_state_file_is_one_line_naming_it(tmp_path):
    directory = tmp_path / "checkpoint_000000"
    directory.mkdir()
    (directory / run_files.STATE_FILE).write_bytes(b"truncated")
    manager = CheckpointManager(0, str(tmp_path / "run"), OneCheckpoint(tmp_path, str(directory)))
    with pytest.raises(
        run_files.RunFileError, match=r"checkpoint_000000/training_state.pt is not a loadable"
    ) as raised:
        manager.restore_state()
    assert "\n" not in str(raised.value) and "weights_only=False" not in str(raised.value)
