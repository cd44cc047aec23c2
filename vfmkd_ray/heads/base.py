"""What a task head is: a named, weighted piece of the one model with its own loss and predictions.

A ``TaskHead`` is a plain object (like a ``LossTerm``): it knows its config, builds the
``nn.Module`` that goes into ``MultiTaskModel.heads[name]``, computes its loss from that module's
output and the batch, and turns outputs into predictions for ``vfmkd eval``. The training loop calls
these methods and knows nothing else about any head (torchtitan's ``TrainSpec``, timm's ``task/``).

Contract (checked for every registered head by ``tests/heads/test_head_contract.py``):

- ``build_module()`` returns a module whose ``forward(features: Features)`` is the head's output;
- ``loss(...)["loss"]`` is a finite scalar, unweighted (the step applies ``weight``), that reaches
  every trainable parameter of the module, also on a batch without ground truth (an image with no
  objects, no masks): DDP waits for every gradient;
- every other entry of ``loss(...)`` is a detached diagnostic, logged as ``<head>/<key>``;
- the module's ``state_dict()`` round-trips with ``strict=True`` into a freshly built module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from vfmkd_ray.batch import Batch, DataNeeds
from vfmkd_ray.models.feature_info import FeatureInfo

RunModelLoader = Callable[[str], nn.Module]  # a run file's URI -> its model, frozen

# The teacher layer shapes a run is built against: alias -> layer -> (C, H, W) of one sample.
TeacherShapes = dict[str, dict[str, tuple[int, int, int]]]
# Runs the backbone, the neck and this head again on other images (YOLC's crop passes).
Rerun = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class Features:
    """What the model hands its heads: every backbone level, the neck's levels when the model has a
    neck, and the adapted student features of each feature-KD term (``distill.terms`` name)."""

    backbone: tuple[torch.Tensor, ...]
    neck: tuple[torch.Tensor, ...] | None
    adapted: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadContext:
    """What heads are built against; derived from ``feature_info``, never hard-coded channels."""

    backbone_info: FeatureInfo
    neck_info: FeatureInfo | None
    input_size: int  # the letterbox side the student trains at
    student_name: str
    student_size: str
    teacher_shapes: TeacherShapes
    # alias -> the teacher's config (TeacherConfig: registered name, weights, input size)
    teachers: dict[str, Any] = field(default_factory=dict)
    # distill.terms name -> the built term; a head may read a term's adapted output by name.
    terms: dict[str, Any] = field(default_factory=dict)
    # A model to train from its initialisation (False: a checkpoint is about to be loaded over it,
    # so heads need not read the weights they would start from).
    fresh: bool = True
    # Rebuilds a trained run, frozen, for a head distilled from one (``models.from_run``, a layer
    # above the heads); None where the caller builds no such head's teacher (a shape-only build).
    load_run_model: RunModelLoader | None = None


@dataclass
class Detections:
    """One image's boxes (``x1, y1, x2, y2`` in input pixels), scores and 0-based labels."""

    boxes: torch.Tensor  # N x 4
    scores: torch.Tensor  # N
    labels: torch.Tensor  # N, int64

    @staticmethod
    def empty(device=None) -> Detections:
        return Detections(
            torch.zeros(0, 4, device=device),
            torch.zeros(0, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
        )

    @staticmethod
    def cat(parts: list[Detections]) -> Detections:
        return Detections(*(torch.cat([getattr(p, f) for p in parts]) for f in ("boxes", "scores", "labels")))


@dataclass
class MaskPredictions:
    """One image's predicted instance masks, one per prompt box."""

    logits_Mhw: torch.Tensor  # at batch.MASK_STRIDE
    scores_M: torch.Tensor  # predicted mask quality (SAM's IoU head), sigmoid-free
    box_index_M: torch.Tensor  # the prompt's row in the batch's boxes_BN4


class TaskHead:
    """Base class of every registered head. Subclasses set ``kind`` and implement the methods."""

    kind: ClassVar[str]  # what ``vfmkd eval`` scores: "boxes" (COCO bbox) or "masks" (mIoU, segm AP)
    # ``<alias>/<layer>`` teacher outputs the head reads from ``Batch.teacher_features``.
    teacher_layers: tuple[str, ...] = ()

    def __init__(self, name: str, cfg: Any, context: HeadContext) -> None:
        self.name = name
        self.cfg = cfg
        self.weight = float(cfg.weight)
        self.context = context

    def needs(self) -> DataNeeds:
        return DataNeeds()

    def build_module(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, module: nn.Module, output: Any, batch: Batch, rerun: Rerun) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def eval_modes(self) -> tuple[str, ...]:
        """Inference variants ``vfmkd eval`` scores separately (YOLC: with and without crops)."""
        return ("default",)

    @torch.no_grad()
    def predict(
        self, module: nn.Module, output: Any, batch: Batch, rerun: Rerun, mode: str = "default"
    ) -> list[Detections] | list[MaskPredictions]:
        raise NotImplementedError

    def check(self) -> None:
        """Fails fast, naming the file, on what the head loads itself (a teacher run); called by
        the driver before any Ray work."""

    def to(self, device: torch.device) -> TaskHead:
        """Moves what the head keeps outside its module (frozen teacher parts) to ``device``."""
        return self

    def pictures(self, module: nn.Module, batch: Batch, rerun: Rerun) -> dict[str, bytes]:
        """Optional per-epoch pictures (PNG bytes by file name) rank 0 writes into the run directory."""
        return {}
