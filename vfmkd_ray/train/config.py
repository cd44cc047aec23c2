"""Config of a Ray Train distillation run."""

from __future__ import annotations

from pydantic import Field

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
    num_workers: int = Field(2, ge=1)
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
