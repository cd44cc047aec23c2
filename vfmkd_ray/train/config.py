"""Config of a Ray Train distillation run."""

from __future__ import annotations

from pydantic import Field, field_validator

from vfmkd_ray.schema import StrictModel


class TrainConfig(StrictModel):
    """Optimiser, schedule and Ray Train scaling of the student run."""

    storage_path: str = "outputs/demo/runs"
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(8, ge=1, description="per worker")
    lr: float = Field(2e-3, gt=0)
    freeze_backbone: bool = Field(
        False,
        description="the backbone does not train (no gradients, batch-norm statistics frozen): only the "
        "neck, heads and adapters do, as in a linear-probe style transfer",
    )
    weight_decay: float = Field(0.01, ge=0)
    grad_clip_norm: float = Field(10.0, gt=0)
    num_workers: int | tuple[int, int] = Field(
        2,
        description="Train workers: a count, or [min, max] for an elastic group that shrinks when nodes "
        "go and grows when they come back (each resize resumes from the latest checkpoint, with steps "
        "per epoch and the schedule recomputed for the new world size)",
    )
    elastic_resize_interval_s: float = Field(
        60.0, gt=0, description="how often an elastic group looks for room to grow ([min, max] workers)"
    )
    checkpoint_every_steps: int | None = Field(
        None,
        ge=0,
        description="a checkpoint (with the epoch's data position) every N steps inside an epoch; 0: at "
        "epoch ends only; unset: about every 10 minutes at the rate measured over the first steps "
        "(epoch ends only when an epoch is shorter)",
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    amp: bool = Field(True, description="mixed precision; takes effect only on CUDA")
    max_failures: int = Field(1, ge=0, description="worker-group restarts from the last checkpoint")
    num_checkpoints_to_keep: int = Field(2, ge=1)
    prefetch_batches: int = Field(1, ge=0)
    shared_filesystem: bool = Field(
        False,
        description="local paths (data, store, storage_path) are on a filesystem every node mounts "
        "(NFS, EFS, Lustre); without it a multi-node cluster needs s3:// URIs",
    )

    @field_validator("num_workers")
    @classmethod
    def _worker_bounds(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        low, high = (value, value) if isinstance(value, int) else value
        if not 1 <= low <= high:
            raise ValueError(f"num_workers must be >= 1, or [min, max] with 1 <= min <= max; got {value}")
        return value

    def worker_bounds(self) -> tuple[int, int]:
        value = self.num_workers
        return (value, value) if isinstance(value, int) else value

    @property
    def max_workers(self) -> int:
        return self.worker_bounds()[1]
