"""The lock-step plan of a worker group, from the world size it actually has: every worker takes
the same number of steps (or DDP would wait forever at the last collective), and an elastic group
that was resized resumes with the plan of its new size."""

from __future__ import annotations

from dataclasses import dataclass

AUTO_CHECKPOINT_S = 600.0  # train.checkpoint_every_steps unset: about this often
AUTO_PROBE_STEPS = 10  # steps timed before the automatic interval is chosen


@dataclass(frozen=True)
class LockstepPlan:
    world_size: int
    global_batch: int  # train.batch_size x world size
    steps_per_epoch: int  # a whole epoch at this size
    steps_left: int  # of the epoch under way, after the samples it already trained on
    total_steps: int  # the LR schedule's length: steps done + this epoch's rest + later epochs

    @property
    def steps_before(self) -> int:
        """Where this group's steps of the epoch under way count from, so that its last is
        ``steps_per_epoch`` when none of its shards runs dry (after a resize the checkpoint's own
        step numbers are another size's). Without a resize: the checkpoint's step."""
        return self.steps_per_epoch - self.steps_left

    def describe(self) -> str:
        return (
            f"{self.world_size} workers x batch {self.global_batch // self.world_size} = global batch "
            f"{self.global_batch}, {self.steps_per_epoch} steps per epoch"
        )


def lockstep_plan(
    train_samples: int,
    batch_size: int,
    world_size: int,
    epochs: int,
    epoch: int,
    steps_done: int,
    epoch_samples: int,
) -> LockstepPlan:
    """``train_samples`` per epoch; resuming ``epoch`` (0-based) after ``steps_done`` steps in all
    and ``epoch_samples`` samples trained in it."""
    global_batch = batch_size * world_size
    per_epoch = train_samples // global_batch
    left = max(0, train_samples - epoch_samples) // global_batch
    return LockstepPlan(
        world_size,
        global_batch,
        per_epoch,
        left,
        max(1, steps_done + left + max(0, epochs - epoch - 1) * per_epoch),
    )


def automatic_interval(step_seconds: float, steps_per_epoch: int) -> int:
    """Steps between in-epoch checkpoints for about ``AUTO_CHECKPOINT_S`` of training (0: the epoch
    is shorter, so its end is enough)."""
    steps = int(AUTO_CHECKPOINT_S / max(step_seconds, 1e-6))
    return 0 if steps >= steps_per_epoch else max(1, steps)
