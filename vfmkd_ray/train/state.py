"""Everything a run needs to resume: model, optimiser, scheduler, scaler, counters and history."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

STATE_FILE = "training_state.pt"


@dataclass
class TrainingState:
    epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)


def save_training_state(
    directory: str | Path,
    state: TrainingState,
    modules: dict[str, torch.nn.Module | torch.optim.Optimizer | object],
) -> None:
    """Writes ``state`` and the ``state_dict()`` of each module into ``directory``."""
    payload = {name: module.state_dict() for name, module in modules.items()}
    payload["counters"] = {
        "epoch": state.epoch,
        "step": state.step,
        "best_val_loss": state.best_val_loss,
        "history": state.history,
    }
    torch.save(payload, Path(directory) / STATE_FILE)


def load_training_state(
    state_file: str | Path | BinaryIO, modules: dict[str, object], origin: str
) -> TrainingState:
    """Restores each module in place from ``state_file`` (a path or an open binary file) of the
    checkpoint ``origin``; returns the counters."""
    payload = torch.load(state_file, map_location="cpu", weights_only=True)
    for name, module in modules.items():
        if name not in payload:
            raise ValueError(f"checkpoint {origin} has no {name!r} state")
        module.load_state_dict(payload[name])
    counters = payload["counters"]
    return TrainingState(
        epoch=int(counters["epoch"]),
        step=int(counters["step"]),
        best_val_loss=float(counters["best_val_loss"]),
        history=list(counters["history"]),
    )
