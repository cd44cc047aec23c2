"""What a head or loss-term config reads besides the student's features, declared as data.

Core code (``config_checks``, the trainer's driver checks) loops over these declarations instead of
testing config types or probing fields with ``getattr``: a new head or term that reads a teacher,
another term's output, ground truth, a file or a class count says so in its own config, and every
check applies to it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import BaseModel

from vfmkd_ray.schema import StrictModel


@dataclass(frozen=True)
class Reads:
    """What one head or term config reads. Field-keyed entries name the config field (dotted for a
    nested one), so a check can name the key a user has to change.

    Attributes:
        teachers: field -> the teacher alias it names; None reads the primary (first) teacher.
        terms: field -> the ``distill.terms`` name whose adapted output it reads.
        boxes: whether it reads ground-truth boxes (with their labels) from every batch.
        masks: whether it reads ground-truth instance masks.
        files: dotted field -> the path or URI it holds (a file the head loads itself).
        classes: the class count it predicts (``num_classes``), which the dataset must match.
        reruns: whether training runs the model a second time on other images (zoomed crops) on
            the workers whose batch has some: collectives inside the model (SyncBatchNorm) would
            wait on the others.
    """

    teachers: Mapping[str, str | None] = field(default_factory=dict)
    terms: Mapping[str, str] = field(default_factory=dict)
    boxes: bool = False
    masks: bool = False
    files: Mapping[str, str] = field(default_factory=dict)
    classes: int | None = None
    reruns: bool = False


class ReaderConfig(StrictModel):
    """Base of every head and loss-term config: reads nothing but the student by default."""

    def reads(self) -> Reads:
        return Reads()

    def settings_without_effect(self) -> list[str]:
        """Settings given in this config that change nothing, one line each, worded from the
        config's own keys (``kd_weight has no effect: ...``); the caller prefixes where it sits."""
        return []

    def with_files(self, place: Callable[[str], str]) -> Self:
        """A copy with every declared file passed through ``place`` (the driver makes them
        absolute for workers, which do not share its working directory)."""
        copy = self
        for path, value in self.reads().files.items():
            copy = _replaced(copy, path.split("."), place(value))
        return copy


def _replaced(model: BaseModel, names: list[str], value: Any) -> Any:
    """``model`` with the field at the dotted path ``names`` set to ``value``."""
    first, *rest = names
    inner = _replaced(getattr(model, first), rest, value) if rest else value
    return model.model_copy(update={first: inner})
