"""The lock-step plan follows the world size a group has, also in the middle of an epoch."""

from vfmkd_ray.training.lockstep import automatic_interval, lockstep_plan


def test_the_plan_of_a_fresh_run_and_of_a_group_resized_mid_epoch():
    fresh = lockstep_plan(100, batch_size=5, world_size=2, epochs=3, epoch=0, steps_done=0, epoch_samples=0)
    assert (fresh.global_batch, fresh.steps_per_epoch, fresh.steps_left, fresh.total_steps) == (
        10,
        10,
        10,
        30,
    )
    # Shrunk to one worker after 4 steps of 10 samples in epoch 1 (14 steps done in all):
    shrunk = lockstep_plan(
        100, batch_size=5, world_size=1, epochs=3, epoch=1, steps_done=14, epoch_samples=40
    )
    assert (shrunk.global_batch, shrunk.steps_per_epoch, shrunk.steps_left) == (5, 20, 12)
    assert shrunk.total_steps == 14 + 12 + 20, "done + this epoch's rest + the last epoch at the new size"
    assert "1 workers x batch 5 = global batch 5, 20 steps per epoch" in shrunk.describe()
    assert (fresh.steps_before, shrunk.steps_before) == (0, 8), "40 samples: 8 steps of the new size"
    same = lockstep_plan(100, batch_size=5, world_size=2, epochs=3, epoch=1, steps_done=14, epoch_samples=40)
    assert same.steps_before == 4, "no resize: the checkpoint's own step"
    # Grown back to two workers after 3 steps of 5 samples in epoch 2: the 85 samples left make 8
    # steps of 10, counted 3..10 so the epoch's last step is its 10th.
    grown = lockstep_plan(100, batch_size=5, world_size=2, epochs=3, epoch=2, steps_done=29, epoch_samples=15)
    assert (grown.steps_before, grown.steps_left, grown.steps_per_epoch) == (2, 8, 10)


def test_the_automatic_interval_is_about_ten_minutes_of_steps():
    assert automatic_interval(step_seconds=0.5, steps_per_epoch=10_000) == 1200
    assert automatic_interval(step_seconds=0.5, steps_per_epoch=1000) == 0, "a shorter epoch: its end"


def test_a_checkpoint_inside_an_epoch_keeps_its_data_position(tmp_path):
    import torch

    from vfmkd_ray.training.state import TrainingState

    state = TrainingState(
        epoch=1, step=14, epoch_step=4, epoch_samples=40, epoch_trained=[-(2**63), 7, 2**63 - 1],
        epoch_sums={"loss": [3.5, 4.0]},
    )  # fmt: skip
    torch.save({"counters": state.state_dict()}, tmp_path / "training_state.pt")
    payload = torch.load(tmp_path / "training_state.pt", weights_only=True)
    restored = TrainingState()
    restored.load_state_dict(payload["counters"])
    assert restored == state
    # A checkpoint of an older version (no epoch position) restores at an epoch boundary.
    for key in ("epoch_step", "epoch_samples", "epoch_trained", "epoch_sums"):
        del payload["counters"][key]
    old = TrainingState()
    old.load_state_dict(payload["counters"])
    assert (old.epoch_step, old.epoch_trained, old.epoch_sums) == (0, [], {})
