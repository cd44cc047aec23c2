"""The ``transfer`` section: which fine-tunes ``vfmkd transfer`` runs per backbone and how they are
compared."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vfmkd_ray.schema import StrictModel

Mode = Literal["frozen", "unfrozen"]


class TransferConfig(StrictModel):
    """A grid of fine-tunes: every backbone x mode x label fraction x seed is one cell, one Ray
    Train run of the configured heads without any teacher, scored by ``vfmkd eval`` on the
    validation split."""

    modes: list[Mode] = Field(
        default_factory=lambda: ["frozen", "unfrozen"],
        description="frozen: only the neck and heads train; unfrozen: the backbone trains too",
    )
    label_fractions: list[float] = Field(
        default_factory=lambda: [0.1, 1.0],
        description="label budgets: the share of the training split fine-tuned on (data.label_fraction)",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="init and data-order seeds")
    baseline: str = Field(
        "random", description="the --backbones name the others are compared with ('random': random init)"
    )
    epochs: int | None = Field(None, ge=1, description="fine-tune epochs of every cell; default train.epochs")
    equal_steps: bool = Field(
        True,
        description="a cell at fraction f streams its labelled subset 1/f times per epoch (data.repeat), "
        "so every budget takes about the same number of optimiser steps; false: fewer steps at "
        "smaller budgets",
    )
    metrics: list[str] | None = Field(
        None,
        description="the table's metrics, as transfer.csv names them (e.g. det/mAP, det.whole/AP50); "
        "default: every head's mAP, AP_small and mIoU",
    )
    storage_path: str | None = Field(
        None, description="where the cells and the report go; default <train.storage_path>/<name>-transfer"
    )

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        if not values or any(not 0.0 < v <= 1.0 for v in values):
            raise ValueError(f"label fractions lie in (0, 1], got {values}")
        return sorted(set(values))

    @field_validator("modes", "seeds")
    @classmethod
    def _not_empty(cls, values: list) -> list:
        if not values or len(set(values)) != len(values):
            raise ValueError(f"a non-empty list without repeats, got {values}")
        return values
