"""Config of a Ray Train distillation run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vfmkd_ray.schema import StrictModel

BOX_METRICS = ("mAP", "AP50", "AP_small")  # a box head's in-loop COCO scores


class TrainConfig(StrictModel):
    """Optimiser, schedule and Ray Train scaling of the student run."""

    storage_path: str = Field(
        "outputs/demo/runs", description="where runs are written: <storage_path>/<name>/, local or s3://"
    )
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(8, ge=1, description="per worker")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw",
        description="adamw, or sgd with Nesterov momentum (MMYOLO's YOLOv8: lr 0.01, momentum 0.937, "
        "weight_decay 5e-4); either way weight decay applies to weights only, not to norm scales "
        "and biases",
    )
    lr: float = Field(2e-3, gt=0, description="the base learning rate, reached at the end of warm-up")
    momentum: float = Field(0.937, gt=0, lt=1, description="sgd's momentum (not used by adamw)")
    base_batch: int = Field(
        64,
        ge=1,
        description="sgd: weight decay scales with the global batch over this when the global batch is "
        "larger (MMYOLO's base_total_batch_size)",
    )
    schedule: Literal["cosine", "linear"] = Field(
        "cosine", description="the decay after warm-up, per step, over the run's planned steps"
    )
    lr_factor: float = Field(
        0.0, ge=0, le=1, description="the last step's learning rate as a fraction of train.lr (MMYOLO: 0.01)"
    )
    warmup_epochs: float = Field(
        0.0,
        ge=0,
        description="linear warm-up over max(this many epochs, warmup_min_steps) steps (MMYOLO: 3); 0: none",
    )
    warmup_min_steps: int = Field(
        1000, ge=0, description="the shortest warm-up in steps when warmup_epochs > 0 (MMYOLO: 1000)"
    )
    warmup_bias_lr: float | None = Field(
        None,
        ge=0,
        description="the biases' learning rate at the start of warm-up (falling to train.lr); unset: "
        "0.1 for sgd (MMYOLO), 0 for adamw",
    )
    warmup_momentum: float = Field(0.8, gt=0, lt=1, description="sgd's momentum at the start of warm-up")
    ema: bool = Field(
        False,
        description="an exponential moving average of the weights (MMYOLO's ExpMomentumEMA), updated "
        "every step: what validation, the best files and export hold",
    )
    ema_momentum: float = Field(1e-4, gt=0, lt=1, description="the EMA's final momentum (MMYOLO: 1e-4)")
    ema_gamma: float = Field(
        2000.0, gt=0, description="steps over which the EMA's momentum falls to ema_momentum (MMYOLO: 2000)"
    )
    best_metric: str = Field(
        "val/loss",
        description="what picks the best epoch (its files: best_model.pth, the backbone): val/loss or "
        "another validation key (lower is better for a loss, higher otherwise), or a box head's COCO "
        "score <head>/mAP, <head>/AP50, <head>/AP_small (MMYOLO: coco/bbox_mAP)",
    )
    eval_every_epochs: int = Field(
        1,
        ge=0,
        description="box heads are scored with pycocotools on the validation split every N epochs and "
        "at the last (their <head>/mAP, AP50, AP_small in the epoch's record); 0: never",
    )
    sync_bn: bool = Field(
        False,
        description="batch-norm statistics over the global batch (torch SyncBatchNorm; CUDA workers "
        "only), as MMYOLO's syncbn configs",
    )
    channels_last: bool = Field(
        False,
        description="the student's weights, and so its activations, in channels-last (NHWC) memory: "
        "faster convolutions on CPUs and on GPUs with AMP, the same values, best files and exports; a "
        "relaunch may switch it and still resume; timm's --channels-last",
    )
    freeze_backbone: bool = Field(
        False,
        description="the backbone does not train (no gradients, batch-norm statistics frozen): only the "
        "neck, heads and adapters do, as in a linear-probe style transfer",
    )
    weight_decay: float = Field(
        0.01, ge=0, description="on weights only (convolutions, linears), not norm scales or biases"
    )
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
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each Train worker reserves")
    use_gpu: bool = Field(False, description="one GPU per Train worker")
    amp: bool = Field(True, description="mixed precision; takes effect only on CUDA")
    max_failures: int = Field(1, ge=0, description="worker-group restarts from the last checkpoint")
    num_checkpoints_to_keep: int = Field(2, ge=1)
    prefetch_batches: int = Field(1, ge=0)
    shared_filesystem: bool = Field(
        False,
        description="local paths (data, store, storage_path) are on a filesystem every node mounts "
        "(NFS, EFS, Lustre); without it a multi-node cluster needs s3:// URIs",
    )

    @field_validator("best_metric")
    @classmethod
    def _best_metric_shape(cls, value: str) -> str:
        head, _, metric = value.partition("/")
        if not (value.startswith("val/") or (head and metric in BOX_METRICS)):
            raise ValueError(
                "best_metric must be a validation key (val/loss, val/...) or "
                f"<head>/{'|'.join(BOX_METRICS)}; got {value!r}"
            )
        return value

    def best_is_box_score(self) -> bool:
        return not self.best_metric.startswith("val/")

    @field_validator("num_workers")
    @classmethod
    def _worker_bounds(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        low, high = (value, value) if isinstance(value, int) else value
        if not 1 <= low <= high:
            raise ValueError(f"num_workers must be >= 1, or [min, max] with 1 <= min <= max; got {value}")
        return value

    def settings_without_effect(self) -> list[str]:
        """The settings given that this config does not use, one line each (without ``train.``)."""
        given, lines = self.model_fields_set, []
        if self.optimizer != "sgd":
            lines += [
                f"{key} is used by optimizer sgd only" for key in ("momentum", "base_batch") if key in given
            ]
            if "warmup_momentum" in given:
                lines.append(
                    "warmup_momentum is used by optimizer sgd only (adamw has no momentum to warm up)"
                )
        if self.warmup_epochs == 0:
            lines += [
                f"{key} has no effect: warmup_epochs is 0 (no warm-up)"
                for key in ("warmup_min_steps", "warmup_bias_lr", "warmup_momentum")
                if key in given
            ]
        if not self.ema:
            lines += [
                f"{key} has no effect: ema is off" for key in ("ema_momentum", "ema_gamma") if key in given
            ]
        if self.sync_bn and not self.use_gpu:
            lines.append("sync_bn takes effect on CUDA workers only (use_gpu is false): plain batch norm")
        return lines

    def bias_warmup_lr(self) -> float:
        if self.warmup_bias_lr is not None:
            return self.warmup_bias_lr
        return 0.1 if self.optimizer == "sgd" else 0.0

    def worker_bounds(self) -> tuple[int, int]:
        value = self.num_workers
        return (value, value) if isinstance(value, int) else value

    @property
    def max_workers(self) -> int:
        return self.worker_bounds()[1]
