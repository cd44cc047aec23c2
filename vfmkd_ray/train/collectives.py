"""What every Ray Train loop here shares: the step-count agreement that keeps DDP in lock-step,
sum-and-count means across workers, restoring the latest checkpoint, and reporting (an epoch, or a
checkpoint inside one)."""

from __future__ import annotations

import io
import tempfile

import ray.train
import torch
import torch.distributed as dist

from vfmkd_ray.run_files import (
    STATE_FILE,
    TrainingState,
    load_training_state,
    save_training_state,
    write_metrics_log,
)
from vfmkd_ray.train.checkpoint_upload import upload_with_retries


def all_workers_have(has_batch: bool, device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return has_batch
    flag = torch.tensor([1 if has_batch else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def mean_across_workers(sums: dict[str, tuple[float, int]], device) -> dict[str, float]:
    """Sum-and-count means over all workers of every key any worker has (a worker with an empty
    shard, or whose batches never produced a key, contributes nothing to it)."""
    return {key: total / max(count, 1) for key, (total, count) in totals_across_workers(sums, device).items()}


def totals_across_workers(sums: dict[str, tuple[float, int]], device) -> dict[str, tuple[float, float]]:
    """The (sum, count) pairs of every key any worker has, summed over all workers."""
    keys = sorted(_keys_of_all_workers(sums))
    rows = [list(sums.get(key, (0.0, 0))) for key in keys]
    packed = torch.tensor(rows, dtype=torch.float64, device=device).reshape(-1, 2)
    if _distributed() and keys:
        dist.all_reduce(packed)
    return {key: (float(packed[i, 0]), float(packed[i, 1])) for i, key in enumerate(keys)}


def gather_across_workers(values: list[int]) -> list[int]:
    """Every worker's ``values``, concatenated in rank order (on every worker)."""
    if not _distributed():
        return list(values)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(values))
    return [value for part in gathered for value in part]


def _keys_of_all_workers(sums: dict) -> set[str]:
    """The union of every worker's keys: an all-reduce over different key lists would pair one
    worker's value with another's different metric (or hang)."""
    if not _distributed():
        return set(sums)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sorted(sums))
    return set().union(*gathered)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def max_across_workers(value: float, device) -> float:
    packed = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return float(packed[0])


def restore_state(resumable: dict) -> TrainingState:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainingState()
    # Read straight from the checkpoint's storage into memory. as_directory() would share one
    # temporary download per node among the workers, and after a worker-group restart from S3 one
    # worker read the state file while another was deleting that download (a truncated file).
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{STATE_FILE}") as stream:
        state_file = io.BytesIO(stream.read())
    return load_training_state(state_file, resumable, checkpoint.path)


def report_checkpoint(
    rank: int, run_dir: str, state: TrainingState, record: dict, resumable: dict, epoch_end: bool = True
) -> None:
    """One ``ray.train.report`` on every worker (each must report the same number of times) with
    rank 0's checkpoint, uploaded in the background with retries (``train.checkpoint_upload``).
    At an epoch's end rank 0 also rewrites the metrics log first."""
    if rank != 0:
        ray.train.report(record)
        return
    if epoch_end:
        write_metrics_log(run_dir, state.history)
    directory = tempfile.mkdtemp(prefix="vfmkd-checkpoint-")  # Ray deletes it once uploaded
    save_training_state(directory, state, resumable)
    ray.train.report(
        record,
        checkpoint=ray.train.Checkpoint.from_directory(directory),
        checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
        checkpoint_upload_fn=upload_with_retries,
    )
